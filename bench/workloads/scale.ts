/**
 * Scale: many existing files in many folders, AFTER_UPLOAD=keep, a warm journal. A first `once`
 * run uploads everything and fills the journal; then `watch` is started on the same journal and
 * timed from process start to its `watching` line (the initial scan is done by then), and stopped.
 * Its final summary must show every file `unchanged` and none `hashed`.
 */
import { join } from 'node:path';
import { makeTemp, removeTemp, sleep, syncDisk, type BenchContext } from '../lib/context.js';
import { generate, type FileSpec } from '../lib/generate.js';
import { MIB, round, type ScaleResult } from '../lib/results.js';
import { startBenchServer } from '../lib/server.js';
import { oursIn, runOursOnce, startOursWatch, type Summary } from '../tools/ours.js';

export interface ScaleDef {
  files: number;
  folders: number;
  fileBytes: number;
}

/** How long the second start stays up after `watching`, so its memory settles before it is stopped. */
const IDLE_MS = 1_000;

export async function runScale(ctx: BenchContext, def: ScaleDef): Promise<ScaleResult> {
  const perFolder = Math.ceil(def.files / def.folders);
  const specs: FileSpec[] = Array.from({ length: def.files }, (_, i) => ({
    rel: `d${String(Math.floor(i / perFolder)).padStart(5, '0')}/f${String(i % perFolder).padStart(3, '0')}.jpg`,
    size: def.fileBytes,
  }));
  const dir = await makeTemp(ctx, 'scale');
  const server = await startBenchServer();
  try {
    ctx.log(`  scale: generating ${def.files} files in ${def.folders} folders ...`);
    await generate(join(dir, 'in'), specs, ctx.seed);
    syncDisk();
    const config = oursIn(dir, ctx, server, { afterUpload: 'keep', stabilityWaitSeconds: 0 });
    ctx.log('  scale: first run (fills the journal) ...');
    const fill = await runOursOnce(config);
    if (fill.summary?.uploaded !== def.files) {
      throw new Error(`scale: the first run uploaded ${fill.summary?.uploaded} of ${def.files}`);
    }

    ctx.log('  scale: second start ...');
    let readyAt: number | undefined;
    let summary: Summary | undefined;
    const proc = startOursWatch(
      { ...config, ...(ctx.profileDir !== undefined ? { cpuProfDir: join(ctx.profileDir, 'scale') } : {}) },
      (log, at) => {
        if (log.msg.startsWith('watching ')) readyAt ??= at;
        if (log.msg.startsWith('summary:')) summary = log as unknown as Summary;
      },
    );
    const deadline = Date.now() + 10 * 60_000;
    while (readyAt === undefined && Date.now() < deadline && proc.child.exitCode === null) await sleep(20);
    if (readyAt !== undefined) await sleep(IDLE_MS);
    proc.kill('SIGTERM');
    const exit = await proc.exit;
    if (readyAt === undefined) throw new Error(`scale: the second start never logged "watching"\n${exit.stdoutTail.join('\n')}`);
    const found = summary;
    if (!found) throw new Error('scale: the second start logged no summary');
    const readyMs = round(readyAt - proc.startedAt, 0);
    const peakRssMib = round(exit.peakRssBytes / MIB, 1);
    return {
      kind: 'scale',
      id: 'scale',
      title: `Scale: ${def.files.toLocaleString('en')} files in ${def.folders.toLocaleString('en')} folders, keep mode, warm journal`,
      files: def.files,
      folders: def.folders,
      fillMs: Math.round(fill.exit.ms),
      fillPeakRssMib: round(fill.exit.peakRssBytes / MIB, 1),
      readyMs,
      peakRssMib,
      summary: { unchanged: found.unchanged, hashed: found.hashed, uploaded: found.uploaded },
      targets: [
        {
          workload: 'scale',
          name: `ready (${def.files.toLocaleString('en')} files)`,
          goal: '<= 15 s',
          measured: `${(readyMs / 1000).toFixed(2)} s`,
          pass: readyMs <= 15_000,
        },
        {
          workload: 'scale',
          name: 'no re-hashing on a warm journal',
          goal: `hashed 0, unchanged ${def.files}`,
          measured: `hashed ${found.hashed}, unchanged ${found.unchanged}, uploaded ${found.uploaded}`,
          pass: found.hashed === 0 && found.unchanged === def.files && found.uploaded === 0,
        },
        { workload: 'scale', name: 'peak RSS', goal: '<= 400 MB', measured: `${peakRssMib} MB`, pass: peakRssMib <= 400 },
      ],
      notes: [],
    };
  } finally {
    await server.stop();
    await removeTemp(dir);
  }
}
