/** The machine a run measured: put beside every result, since absolute numbers only hold there. */
import { spawnSync } from 'node:child_process';
import { cpus, release, totalmem } from 'node:os';
import { REPO_ROOT } from './paths.js';
import type { Machine } from './results.js';

export function describeMachine(tmpRoot: string, officialCliNode?: string): Machine {
  const df = spawnSync('df', ['-hT', tmpRoot], { encoding: 'utf8' });
  const line = df.stdout.trim().split('\n').at(-1)?.split(/\s+/) ?? [];
  return {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
    memoryGib: Math.round(totalmem() / 1024 ** 3),
    node: process.version,
    ...(officialCliNode !== undefined ? { officialCliNode } : {}),
    os: `Linux ${release()}`,
    tmpFs: line.length >= 7 ? `${tmpRoot} on ${line[0]} (${line[1]}), ${line[4]} free` : tmpRoot,
  };
}

/** HEAD's short hash, with `+dirty` when the work tree has changes. */
export function describeCommit(): string {
  const head = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO_ROOT, encoding: 'utf8' });
  if (head.status !== 0) return 'unknown';
  const status = spawnSync('git', ['status', '--porcelain', '--', 'src'], { cwd: REPO_ROOT, encoding: 'utf8' });
  return `${head.stdout.trim()}${status.stdout.trim() === '' ? '' : '+dirty src'}`;
}
