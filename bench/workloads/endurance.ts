/**
 * Endurance: a `watch` daemon fed round after round of photos, as a hot folder is over months,
 * to see whether what it holds grows with the files it has handled. Each round, a folder of
 * photos (every tenth with an XMP sidecar) is made beside the watch folder and moved in whole;
 * the round ends when every photo was uploaded and the emptied folder removed
 * (`REMOVE_EMPTY_FOLDERS`). Then the heap probe reads ours's memory after two full garbage
 * collections, and the process's RSS is read from outside. The growth per 10,000 files is the
 * slope of a least-squares line through the rounds after the warm-up (the first rounds fill
 * V8's compiled code, the allocator's arenas and the buffer pools).
 */
import { existsSync, writeFileSync } from 'node:fs';
import { mkdir, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { countFiles, makeTemp, removeTemp, sleep, type BenchContext } from '../lib/context.js';
import { generate, type FileSpec } from '../lib/generate.js';
import { failureMessage } from '../lib/proc.js';
import { MIB, round, type EnduranceResult, type EnduranceSample } from '../lib/results.js';
import { readRss } from '../lib/rss.js';
import { startBenchServer } from '../lib/server.js';
import { HEAP_PROBE_FLAGS, HEAP_PROBE_VARIABLE, readHeap } from '../tools/heap-probe.js';
import { oursIn, startOursWatch } from '../tools/ours.js';

export interface EnduranceDef {
  rounds: number;
  filesPerRound: number;
  fileBytes: number;
  /** Rounds left out of the growth figures. */
  warmupRounds: number;
}

/** Every this many photos gets a sidecar, which ours hashes and moves with it. */
const SIDECAR_EVERY = 10;
const FOLDERS_PER_ROUND = 20;
/** Longest wait for one round before the workload is declared broken. */
const ROUND_TIMEOUT_MS = 180_000;
/** Growth per 10,000 files above which the workload reports a miss. */
const HEAP_GROWTH_GOAL_MIB = 0.5;
const RSS_GROWTH_GOAL_MIB = 5;
/** Rounds after the warm-up needed before the growth is judged. */
const MIN_STEADY_ROUNDS = 8;

export async function runEndurance(ctx: BenchContext, def: EnduranceDef): Promise<EnduranceResult> {
  const dir = await makeTemp(ctx, 'endurance');
  const watch = join(dir, 'in');
  const staging = join(dir, 'staging');
  const archive = join(dir, 'archive');
  const probe = join(dir, 'heap-probe.jsonl');
  await mkdir(watch, { recursive: true });
  const server = await startBenchServer();
  let uploaded = 0;
  let watching = false;
  const proc = startOursWatch(
    oursIn(dir, ctx, server, {
      afterUpload: 'move',
      stabilityWaitSeconds: 0.5,
      stabilityIntervalSeconds: 0.1,
      env: { REMOVE_EMPTY_FOLDERS: 'true', [HEAP_PROBE_VARIABLE]: probe },
      nodeFlags: HEAP_PROBE_FLAGS,
    }),
    (log) => {
      if (log.msg.startsWith('watching ')) watching = true;
      if (log.msg.startsWith('uploaded ')) uploaded += 1;
      if (log.level >= 50) ctx.log(`  ours: ${log.msg}`);
    },
  );
  const samples: EnduranceSample[] = [];
  try {
    await until(() => watching, 60_000, 'ours never logged "watching"');
    for (let r = 1; r <= def.rounds; r++) {
      const name = `round-${String(r).padStart(3, '0')}`;
      const specs: FileSpec[] = Array.from({ length: def.filesPerRound }, (_, i) => ({
        rel: `${name}/folder-${String(i % FOLDERS_PER_ROUND).padStart(2, '0')}/img-${String(i).padStart(5, '0')}.jpg`,
        size: def.fileBytes,
      }));
      await generate(staging, specs, `${ctx.seed}-endurance-${r}`);
      specs.forEach((spec, i) => {
        if (i % SIDECAR_EVERY === 0) writeFileSync(join(staging, `${spec.rel}.xmp`), `<x:xmpmeta round="${r}" photo="${i}"/>\n`);
      });
      const sidecars = Math.ceil(def.filesPerRound / SIDECAR_EVERY);
      const before = uploaded;
      const started = Date.now();
      await rename(join(staging, name), join(watch, name));
      await until(
        () => uploaded - before >= def.filesPerRound && !existsSync(join(watch, name)),
        ROUND_TIMEOUT_MS,
        `round ${r}: ${uploaded - before} of ${def.filesPerRound} uploaded, the folder ${existsSync(join(watch, name)) ? 'still there' : 'removed'}`,
      );
      const seconds = (Date.now() - started) / 1000;
      const archived = await countFiles(join(archive, name));
      if (archived !== def.filesPerRound + sidecars) {
        throw new Error(`round ${r}: the archive holds ${archived} files, not ${def.filesPerRound} photos and ${sidecars} sidecars`);
      }
      // The archive would fill the disk over a long run; the uploader no longer looks at it.
      await removeTemp(join(archive, name));
      const rssNow = readRss(proc.pid)?.rss ?? Number.NaN;
      const heap = await readHeap(proc.pid, probe, r);
      samples.push({
        round: r,
        files: r * def.filesPerRound,
        seconds: round(seconds, 2),
        rssMib: round(rssNow / MIB, 1),
        heapMib: round(heap.heapUsed / MIB, 2),
        externalMib: round(heap.external / MIB, 2),
        rssAfterGcMib: round(heap.rss / MIB, 1),
      });
    }
  } finally {
    proc.kill('SIGTERM');
  }
  const exit = await proc.exit;
  const stats = await server.stop();
  await removeTemp(dir);
  if (exit.code !== 0) throw new Error(failureMessage('ours watch', [], exit));
  const files = def.rounds * def.filesPerRound;
  if (stats.uploads !== files) throw new Error(`endurance: the server received ${stats.uploads} uploads of ${files}`);

  const steady = samples.filter((sample) => sample.round > def.warmupRounds);
  const heapGrowth = round(growthPer10k(steady, (sample) => sample.heapMib), 3);
  const rssGrowth = round(growthPer10k(steady, (sample) => sample.rssAfterGcMib), 2);
  const first = steady[0];
  const last = steady.at(-1);
  const span = first && last ? `rounds ${first.round}-${last.round}` : 'no rounds';
  return {
    kind: 'endurance',
    id: 'endurance',
    title: `Endurance: ${def.rounds} rounds of ${def.filesPerRound.toLocaleString('en')} x ${def.fileBytes / 1024} KB into a watched folder`,
    rounds: def.rounds,
    filesPerRound: def.filesPerRound,
    fileBytes: def.fileBytes,
    warmupRounds: def.warmupRounds,
    samples,
    heapGrowthMibPer10k: heapGrowth,
    rssGrowthMibPer10k: rssGrowth,
    peakRssMib: round(exit.peakRssBytes / MIB, 1),
    // A few rounds after the warm-up say how the bench works, not how memory trends.
    targets: steady.length < MIN_STEADY_ROUNDS ? [] : [
      {
        workload: 'endurance',
        name: `heap after GC, growth (${span})`,
        goal: `<= ${HEAP_GROWTH_GOAL_MIB} MB per 10,000 files`,
        measured: `${heapGrowth} MB per 10,000 (${first?.heapMib} -> ${last?.heapMib} MB)`,
        pass: heapGrowth <= HEAP_GROWTH_GOAL_MIB,
      },
      {
        workload: 'endurance',
        name: `RSS after GC, growth (${span})`,
        goal: `<= ${RSS_GROWTH_GOAL_MIB} MB per 10,000 files`,
        measured: `${rssGrowth} MB per 10,000 (${first?.rssAfterGcMib} -> ${last?.rssAfterGcMib} MB)`,
        pass: rssGrowth <= RSS_GROWTH_GOAL_MIB,
      },
    ],
    notes: steady.length < MIN_STEADY_ROUNDS ? [`${steady.length} rounds after the warm-up are too few for a trend: the growth figures are not judged`] : [],
  };
}

/** The least-squares slope of `value` against the files handled, per 10,000 files. */
function growthPer10k(samples: readonly EnduranceSample[], value: (sample: EnduranceSample) => number): number {
  if (samples.length < 2) return Number.NaN;
  const mean = (f: (sample: EnduranceSample) => number): number => samples.reduce((sum, s) => sum + f(s), 0) / samples.length;
  const x = mean((s) => s.files);
  const y = mean(value);
  const covariance = samples.reduce((sum, s) => sum + (s.files - x) * (value(s) - y), 0);
  const variance = samples.reduce((sum, s) => sum + (s.files - x) ** 2, 0);
  return (covariance / variance) * 10_000;
}

async function until(condition: () => boolean, timeoutMs: number, message: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(message);
    await sleep(50);
  }
}
