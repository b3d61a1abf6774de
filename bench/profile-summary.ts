/**
 * Summarises a V8 CPU profile (`node --cpu-prof`, or `npm run bench -- --profile`):
 *
 *   node --import tsx bench/profile-summary.ts FILE.cpuprofile [--top N] [--callers NAME]
 *
 * Prints where the samples fell: idle vs busy, self time per function, and self time per source
 * file, so a missed target can be traced to a cause.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string', default: '25' }, callers: { type: 'string' } } });
const file = positionals[0];
if (file === undefined) {
  process.stderr.write('usage: node --import tsx bench/profile-summary.ts FILE.cpuprofile [--top N]\n');
  process.exit(2);
}
const top = Number(values.top);
const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const byId = new Map(profile.nodes.map((node) => [node.id, node]));
const selfUs = new Map<number, number>();
profile.samples.forEach((id, i) => selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));

const totalUs = profile.endTime - profile.startTime;
const shortUrl = (url: string): string => url.replace(/^file:\/\/.*?\/(node_modules|dist|src)\//, '$1/').replace(/^node:/, 'node:');
const byFunction = new Map<string, number>();
const byFile = new Map<string, number>();
for (const [id, us] of selfUs) {
  const node = byId.get(id);
  if (!node) continue;
  const { functionName, url, lineNumber } = node.callFrame;
  const where = url === '' ? '' : `${shortUrl(url)}:${lineNumber + 1}`;
  const key = `${functionName || '(anonymous)'} ${where}`.trim();
  byFunction.set(key, (byFunction.get(key) ?? 0) + us);
  const fileKey = url === '' ? `(${functionName})` : shortUrl(url).replace(/^(node_modules\/(@[^/]+\/)?[^/]+).*/, '$1');
  byFile.set(fileKey, (byFile.get(fileKey) ?? 0) + us);
}
const ms = (us: number): string => `${(us / 1000).toFixed(0).padStart(7)} ms`;
const pct = (us: number): string => `${((100 * us) / totalUs).toFixed(1).padStart(5)}%`;
process.stdout.write(`${file}\nwall ${(totalUs / 1000).toFixed(0)} ms\n\nself time by function:\n`);
for (const [key, us] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top)) process.stdout.write(`${ms(us)} ${pct(us)}  ${key}\n`);
process.stdout.write('\nself time by file or package:\n');
for (const [key, us] of [...byFile].sort((a, b) => b[1] - a[1]).slice(0, top)) process.stdout.write(`${ms(us)} ${pct(us)}  ${key}\n`);

// --callers NAME: where the self time of functions called NAME (e.g. lstat) was spent, by the
// nearest caller in our own code (dist/ or src/), so a native call can be traced to its step.
if (values.callers !== undefined) {
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const ours = (url: string): boolean => /\/(dist|src)\//.test(url) && !url.includes('node_modules');
  const byCaller = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (node?.callFrame.functionName !== values.callers) continue;
    let caller = parent.get(id);
    while (caller !== undefined && !ours(byId.get(caller)?.callFrame.url ?? '')) caller = parent.get(caller);
    const frame = caller === undefined ? undefined : byId.get(caller)?.callFrame;
    const key = frame ? `${frame.functionName || '(anonymous)'} ${shortUrl(frame.url)}:${frame.lineNumber + 1}` : '(no caller of ours)';
    byCaller.set(key, (byCaller.get(key) ?? 0) + us);
  }
  process.stdout.write(`\nself time of ${values.callers}, by our nearest caller:\n`);
  for (const [key, us] of [...byCaller].sort((a, b) => b[1] - a[1]).slice(0, top)) process.stdout.write(`${ms(us)} ${pct(us)}  ${key}\n`);
}
