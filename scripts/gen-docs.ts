/**
 * Regenerates the option docs from src/options.ts:
 * - README.md: only the table between `<!-- options:start -->` and `<!-- options:end -->`;
 * - .env.example: the whole file.
 *
 *   node --import tsx scripts/gen-docs.ts           # rewrite both
 *   node --import tsx scripts/gen-docs.ts --check   # only report drift (exit code 1)
 *
 * test/unit/docs-sync.test.ts fails when either file differs from what this would write.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { renderEnvExample, spliceOptionsTable } from '../src/options.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const check = process.argv.includes('--check');

async function update(file: string, render: (current: string) => string): Promise<boolean> {
  const path = `${root}${file}`;
  const current = await readFile(path, 'utf8').catch((error: NodeJS.ErrnoException) => {
    // .env.example is generated whole, so a missing one is simply written; README must exist.
    if (error.code === 'ENOENT' && file === '.env.example') return '';
    throw error;
  });
  const next = render(current);
  if (next === current) return false;
  if (check) console.error(`${file} is out of date; run: node --import tsx scripts/gen-docs.ts`);
  else {
    await writeFile(path, next);
    console.log(`updated ${file}`);
  }
  return true;
}

const changed = [
  await update('README.md', spliceOptionsTable),
  await update('.env.example', () => renderEnvExample()),
];
// exitCode rather than process.exit: let pending output flush.
if (check && changed.includes(true)) process.exitCode = 1;
