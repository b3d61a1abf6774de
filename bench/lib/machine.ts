/** The machine a run measured: put beside every result, since absolute numbers only hold there. */
import { spawnSync } from 'node:child_process';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { REPO_ROOT } from './paths.js';
import type { Machine } from './results.js';

/** The 1-minute load average, rounded. */
export function currentLoad(): number {
  return Math.round((loadavg()[0] ?? 0) * 100) / 100;
}

export function describeMachine(tmpRoot: string, oursNode: string, officialCliNode: string | undefined, loadAtStart: number): Machine {
  const df = spawnSync('df', ['-hT', tmpRoot], { encoding: 'utf8' });
  const line = df.stdout.trim().split('\n').at(-1)?.split(/\s+/) ?? [];
  return {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
    memoryGib: Math.round(totalmem() / 1024 ** 3),
    node: oursNode,
    ...(officialCliNode !== undefined ? { officialCliNode } : {}),
    os: `Linux ${release()}`,
    tmpFs: line.length >= 7 ? `${tmpRoot} on ${line[0]} (${line[1]}), ${line[4]} free` : tmpRoot,
    loadAverage: { start: loadAtStart, end: currentLoad() },
  };
}

/**
 * HEAD's short hash and the uncommitted files under src/, if any: what was built and measured.
 * Called at the start of a run, right after `npm run build`.
 */
export function describeCommit(): string {
  const head = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO_ROOT, encoding: 'utf8' });
  if (head.status !== 0) return 'unknown';
  const status = spawnSync('git', ['status', '--porcelain', '--', 'src'], { cwd: REPO_ROOT, encoding: 'utf8' });
  const dirty = status.stdout
    .split('\n')
    .map((line) => line.slice(3).trim())
    .filter((path) => path !== '');
  return dirty.length === 0 ? head.stdout.trim() : `${head.stdout.trim()} + uncommitted ${dirty.join(', ')}`;
}
