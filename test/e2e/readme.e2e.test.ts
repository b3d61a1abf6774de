/**
 * The commands the README gives, in its indented code blocks: a new user types them as they
 * stand, so each must exist. npm scripts are in package.json, the uploader's commands are
 * commands of the built CLI, `npx` finds its program among the installed packages, and every
 * file of this repository that a command names is there.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { CLI_PATH } from '../helpers/cli.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** The command lines of the README's code blocks, without their comments. */
async function readmeCommands(): Promise<string[]> {
  const readme = await readFile(join(ROOT, 'README.md'), 'utf8');
  return readme
    .split('\n')
    .filter((line) => /^ {4,}\S/.test(line))
    .map((line) => line.replace(/\s+#.*$/, '').trim())
    .filter((line) => /^(npm|npx|node|sudo|docker) /.test(line));
}

describe('the commands in the README', () => {
  it('run npm scripts that package.json has', async () => {
    const { scripts } = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    const used = (await readmeCommands()).flatMap((line) => /^npm (?:run (\S+)|(start|test)\b)/.exec(line)?.slice(1).filter(Boolean) ?? []);
    expect(used).toContain('start');
    for (const name of used) expect(Object.keys(scripts), `npm run ${name}`).toContain(name);
  });

  it('give the uploader commands it has, and run npx only on programs installed here', async () => {
    const lines = await readmeCommands();
    const commands = lines.flatMap((line) => /(?:npm start --|node dist\/cli\.js) (\S+)/.exec(line)?.[1] ?? []);
    expect(commands).toContain('check');
    for (const command of new Set(commands)) {
      const help = spawnSync(process.execPath, [CLI_PATH, command, '--help'], { encoding: 'utf8' });
      expect(help.status, `${command}: ${help.stderr}`).toBe(0);
      expect(help.stdout).toContain(`Usage: immich-auto-uploader ${command}`);
    }
    for (const line of lines.filter((candidate) => candidate.startsWith('npx '))) {
      const program = line.split(' ')[1] ?? '';
      expect(existsSync(join(ROOT, 'node_modules', '.bin', program)), `${line}: npx finds no ${program} here`).toBe(true);
    }
  });

  it('name files that this repository has', async () => {
    const named = (await readmeCommands()).flatMap((line) => line.match(/\b(?:deploy|dist|scripts)\/[\w.-]+/g) ?? []);
    expect(named).toContain('deploy/compose.yaml');
    for (const path of named.filter((candidate) => !candidate.startsWith('dist/'))) expect(existsSync(join(ROOT, path)), path).toBe(true);
  });
});
