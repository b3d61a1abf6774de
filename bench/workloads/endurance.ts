/**
 * Endurance: a `watch` daemon fed round after round of photos, as a hot folder is over months,
 * to see whether what it holds grows with the files it has handled. Each round, a folder of
 * photos (every tenth with an XMP sidecar) is made beside the watch folder and moved in whole;
 * the round ends when every photo was uploaded and the emptied folder removed
 * (`REMOVE_EMPTY_FOLDERS`). Then the heap probe reads ours's memory after two full garbage
 * collections, and the process's RSS is read from outside. The growth per 10,000 files is the
 * slope of a least-squares line through the rounds after the warm-up (the first rounds fill
 * V8's compiled code, the allocator's arenas and the buffer pools).
 *
 * Last comes a burst: one folder of many more photos than the pipeline takes in at once (a
 * Takeout export, a year of scans) moved in whole. Its walk then waits for room in the pipeline
 * until most of it is uploaded, and the heap is read every fifth of the way. The pipeline is
 * full at each reading but the last, so what it holds beyond that must not grow with the files
 * handled meanwhile.
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
import { HEAP_PROBE_FLAGS, HEAP_PROBE_VARIABLE, readHeap, type HeapReading } from '../tools/heap-probe.js';
import { oursIn, startOursWatch } from '../tools/ours.js';

export interface EnduranceDef {
  rounds: number;
  filesPerRound: number;
  fileBytes: number;
  /** Rounds left out of the growth figures. */
  warmupRounds: number;
  /** Photos in the last, single folder (0: none). */
  burstFiles: number;
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
/** Heap readings during the burst, evenly spaced over its uploads. */
const BURST_READINGS = 5;
/**
 * Growth per 10,000 files of the heap after GC during the burst, above which it is a miss: looser
 * than the rounds' goal, for the pipeline's content (up to 2,000 files) varies between readings.
 */
const BURST_HEAP_GROWTH_GOAL_MIB = 1;

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
  const burstHeapMib: number[] = [];
  let burstSeconds = Number.NaN;
  let probes = 0;
  const heapNow = async (): Promise<HeapReading> => readHeap(proc.pid, probe, (probes += 1));

  /**
   * Moves a folder of `files` photos in, waits until every one was uploaded and the emptied folder
   * removed, checks the archive and clears it. `progress` is called with the photos uploaded so
   * far while it waits. Returns the seconds it took.
   */
  const feed = async (name: string, files: number, progress?: (done: number) => Promise<void>): Promise<number> => {
    const specs: FileSpec[] = Array.from({ length: files }, (_, i) => ({
      rel: `${name}/folder-${String(i % FOLDERS_PER_ROUND).padStart(2, '0')}/img-${String(i).padStart(6, '0')}.jpg`,
      size: def.fileBytes,
    }));
    await generate(staging, specs, `${ctx.seed}-endurance-${name}`);
    specs.forEach((spec, i) => {
      if (i % SIDECAR_EVERY === 0) writeFileSync(join(staging, `${spec.rel}.xmp`), `<x:xmpmeta folder="${name}" photo="${i}"/>\n`);
    });
    const sidecars = Math.ceil(files / SIDECAR_EVERY);
    const before = uploaded;
    const started = Date.now();
    const deadline = started + ROUND_TIMEOUT_MS * Math.ceil(files / def.filesPerRound);
    await rename(join(staging, name), join(watch, name));
    while (uploaded - before < files || existsSync(join(watch, name))) {
      if (Date.now() > deadline) {
        throw new Error(`${name}: ${uploaded - before} of ${files} uploaded, the folder ${existsSync(join(watch, name)) ? 'still there' : 'removed'}`);
      }
      await progress?.(uploaded - before);
      await sleep(50);
    }
    const seconds = (Date.now() - started) / 1000;
    const archived = await countFiles(join(archive, name));
    if (archived !== files + sidecars) {
      throw new Error(`${name}: the archive holds ${archived} files, not ${files} photos and ${sidecars} sidecars`);
    }
    // The archive would fill the disk over a long run; the uploader no longer looks at it.
    await removeTemp(join(archive, name));
    return seconds;
  };

  try {
    await until(() => watching, 60_000, 'ours never logged "watching"');
    for (let r = 1; r <= def.rounds; r++) {
      const seconds = await feed(`round-${String(r).padStart(3, '0')}`, def.filesPerRound);
      const rssNow = readRss(proc.pid)?.rss ?? Number.NaN;
      const heap = await heapNow();
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
    if (def.burstFiles > 0) {
      const step = def.burstFiles / BURST_READINGS;
      burstSeconds = await feed('burst', def.burstFiles, async (done) => {
        if (done >= (burstHeapMib.length + 1) * step && burstHeapMib.length < BURST_READINGS - 1) {
          burstHeapMib.push(round((await heapNow()).heapUsed / MIB, 2));
        }
      });
      burstHeapMib.push(round((await heapNow()).heapUsed / MIB, 2));
    }
  } finally {
    proc.kill('SIGTERM');
  }
  const exit = await proc.exit;
  const stats = await server.stop();
  await removeTemp(dir);
  if (exit.code !== 0) throw new Error(failureMessage('ours watch', [], exit));
  const files = def.rounds * def.filesPerRound + def.burstFiles;
  if (stats.uploads !== files) throw new Error(`endurance: the server received ${stats.uploads} uploads of ${files}`);

  const steady = samples.filter((sample) => sample.round > def.warmupRounds);
  const heapGrowth = round(growthPer10k(steady, (sample) => sample.heapMib), 3);
  const rssGrowth = round(growthPer10k(steady, (sample) => sample.rssAfterGcMib), 2);
  const first = steady[0];
  const last = steady.at(-1);
  const span = first && last ? `rounds ${first.round}-${last.round}` : 'no rounds';
  const burst = def.burstFiles > 0 ? { files: def.burstFiles, seconds: round(burstSeconds, 2), heapMib: burstHeapMib } : undefined;
  // The readings with the pipeline full: all but the last, taken once the folder was done.
  const burstFull = burstHeapMib.slice(0, -1);
  const burstGrowth = round(slopePer10k(burstFull.map((mib, i) => [((i + 1) * def.burstFiles) / BURST_READINGS, mib])), 3);
  const judged = steady.length >= MIN_STEADY_ROUNDS;
  return {
    kind: 'endurance',
    id: 'endurance',
    title:
      `Endurance: ${def.rounds} rounds of ${def.filesPerRound.toLocaleString('en')} x ${def.fileBytes / 1024} KB into a watched folder` +
      (burst ? `, then one folder of ${burst.files.toLocaleString('en')}` : ''),
    rounds: def.rounds,
    filesPerRound: def.filesPerRound,
    fileBytes: def.fileBytes,
    warmupRounds: def.warmupRounds,
    samples,
    heapGrowthMibPer10k: heapGrowth,
    rssGrowthMibPer10k: rssGrowth,
    burst,
    peakRssMib: round(exit.peakRssBytes / MIB, 1),
    // A few rounds after the warm-up say how the bench works, not how memory trends.
    targets: !judged ? [] : [
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
      ...(burst
        ? [
            {
              workload: 'endurance',
              name: `heap after GC, growth while one folder of ${burst.files.toLocaleString('en')} is uploaded`,
              goal: `<= ${BURST_HEAP_GROWTH_GOAL_MIB} MB per 10,000 files`,
              measured: `${burstGrowth} MB per 10,000 (${burstFull.join(', ')} MB)`,
              pass: burstGrowth <= BURST_HEAP_GROWTH_GOAL_MIB,
            },
          ]
        : []),
    ],
    notes: !judged ? [`${steady.length} rounds after the warm-up are too few for a trend: the growth figures are not judged`] : [],
  };
}

/** The least-squares slope of `value` against the files handled, per 10,000 files. */
function growthPer10k(samples: readonly EnduranceSample[], value: (sample: EnduranceSample) => number): number {
  return slopePer10k(samples.map((sample) => [sample.files, value(sample)]));
}

/** The least-squares slope of [files, MB] points, per 10,000 files. */
function slopePer10k(points: readonly (readonly [number, number])[]): number {
  if (points.length < 2) return Number.NaN;
  const x = points.reduce((sum, [files]) => sum + files, 0) / points.length;
  const y = points.reduce((sum, [, mib]) => sum + mib, 0) / points.length;
  const covariance = points.reduce((sum, [files, mib]) => sum + (files - x) * (mib - y), 0);
  const variance = points.reduce((sum, [files]) => sum + (files - x) ** 2, 0);
  return (covariance / variance) * 10_000;
}

async function until(condition: () => boolean, timeoutMs: number, message: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(message);
    await sleep(50);
  }
}
