/** What every workload gets from the runner, and small file-system helpers they share. */
import { spawnSync } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { NodeBinary } from '../tools/node.js';
import type { OfficialCli } from '../tools/official-cli.js';

export type Mode = 'quick' | 'default' | 'full';

export interface BenchContext {
  mode: Mode;
  /** Uploads at a time, the same for ours, the official CLI and the limit. */
  concurrency: number;
  /** Where workload folders are made (and removed after each workload). */
  tmpRoot: string;
  seed: string;
  /** The Node that runs ours and the bare uploader (`--node`; default: the one running the bench). */
  node: NodeBinary;
  /** Undefined when it could not be installed: the comparison is then left out. */
  official?: OfficialCli;
  /** When set, our runs write CPU profiles into sub-folders of it. */
  profileDir?: string;
  log(message: string): void;
}

export async function makeTemp(ctx: BenchContext, name: string): Promise<string> {
  return mkdtemp(join(ctx.tmpRoot, `iau-bench-${name}-`));
}

export async function removeTemp(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true, maxRetries: 3 });
}

/** Flushes written data to disk, so a tool's run does not pay for the generator's writeback. */
export function syncDisk(): void {
  spawnSync('sync', { stdio: 'ignore' });
}

/** Regular files below `dir`, at any depth; 0 if it does not exist. */
export async function countFiles(dir: string): Promise<number> {
  let entries;
  try {
    entries = await readdir(dir, { recursive: true, withFileTypes: true });
  } catch {
    return 0;
  }
  return entries.filter((entry) => entry.isFile()).length;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
