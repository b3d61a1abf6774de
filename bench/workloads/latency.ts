/**
 * Latency: files dropped one at a time into a folder that `watch` watches. Each file is written
 * under a temporary name in a staging folder beside the watch folder (same file system), then
 * renamed in: it appears complete, as with browsers, Syncthing and most cameras' import tools.
 * Measured from just after the rename to the arrival of our `uploaded <file>` log line, which is
 * written once the original is archived; the stability window is subtracted.
 */
import { existsSync } from 'node:fs';
import { mkdir, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { makeTemp, removeTemp, sleep, type BenchContext } from '../lib/context.js';
import { writeFileFor } from '../lib/generate.js';
import { MIB, percentile, round, type LatencyResult } from '../lib/results.js';
import { startBenchServer } from '../lib/server.js';
import { oursIn, startOursWatch, type LogLine } from '../tools/ours.js';

export interface LatencyDef {
  files: number;
  fileBytes: number;
  stabilityWaitSeconds: number;
  checkIntervalSeconds: number;
}

/** Longest wait for one file before the workload is declared broken. */
const PER_FILE_TIMEOUT_MS = 60_000;

export async function runLatency(ctx: BenchContext, def: LatencyDef): Promise<LatencyResult> {
  const dir = await makeTemp(ctx, 'latency');
  const watch = join(dir, 'in');
  const staging = join(dir, 'staging');
  const archive = join(dir, 'archive');
  await mkdir(watch, { recursive: true });
  await mkdir(staging, { recursive: true });
  const server = await startBenchServer();
  const waiters = new Map<string, (at: number) => void>();
  let ready: ((at: number) => void) | undefined;
  const readyAt = new Promise<number>((resolve) => (ready = resolve));
  const onLog = (log: LogLine, at: number): void => {
    if (log.msg.startsWith('watching ')) ready?.(at);
    if (log.msg.startsWith('uploaded ') && typeof log.file === 'string') {
      const name = log.file.split(/[\\/]/).at(-1) ?? '';
      waiters.get(name)?.(at);
    }
    if (log.level >= 50) ctx.log(`  ours: ${log.msg}`);
  };
  const proc = startOursWatch(
    oursIn(dir, ctx, server, {
      afterUpload: 'move',
      stabilityWaitSeconds: def.stabilityWaitSeconds,
      stabilityIntervalSeconds: def.checkIntervalSeconds,
      ...(ctx.profileDir !== undefined ? { cpuProfDir: join(ctx.profileDir, 'latency') } : {}),
    }),
    onLog,
  );
  const samples: number[] = [];
  try {
    await withTimeout(readyAt, 60_000, 'ours never logged "watching"');
    for (let i = 0; i < def.files; i++) {
      const name = `drop-${String(i).padStart(4, '0')}.jpg`;
      const staged = join(staging, `${name}.tmp`);
      await writeFileFor(staged, { rel: name, size: def.fileBytes }, ctx.seed);
      const uploaded = new Promise<number>((resolve) => waiters.set(name, resolve));
      await rename(staged, join(watch, name));
      const droppedAt = performance.now();
      const at = await withTimeout(uploaded, PER_FILE_TIMEOUT_MS, `${name} was not uploaded within ${PER_FILE_TIMEOUT_MS} ms`);
      waiters.delete(name);
      if (!existsSync(join(archive, name))) throw new Error(`${name}: logged as uploaded but not in the archive`);
      samples.push(round(at - droppedAt - def.stabilityWaitSeconds * 1000, 1));
      // A pause between drops, so that each file meets an idle uploader.
      await sleep(50);
    }
  } finally {
    proc.kill('SIGTERM');
  }
  const exit = await proc.exit;
  const stats = await server.stop();
  await removeTemp(dir);
  if (stats.uploads !== def.files) throw new Error(`latency: the server received ${stats.uploads} uploads of ${def.files}`);

  const p50 = percentile(samples, 50);
  return {
    kind: 'latency',
    id: 'latency',
    title: `Latency: ${def.files} files of ${def.fileBytes / MIB} MB, one at a time`,
    files: def.files,
    fileBytes: def.fileBytes,
    stabilityWaitMs: def.stabilityWaitSeconds * 1000,
    checkIntervalMs: def.checkIntervalSeconds * 1000,
    samplesMs: samples,
    p50Ms: p50,
    p95Ms: percentile(samples, 95),
    maxMs: Math.max(...samples),
    peakRssMib: round(exit.peakRssBytes / MIB, 1),
    targets: [
      {
        workload: 'latency',
        name: 'p50 beyond the stability window',
        goal: '<= 150 ms',
        measured: `${p50} ms`,
        pass: p50 <= 150,
      },
    ],
    notes: [],
  };
}

async function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(message)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
