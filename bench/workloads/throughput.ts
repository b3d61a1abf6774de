/**
 * A throughput workload (many small files, or a few large ones): the same files, generated fresh
 * for each, go through ours (`once`, AFTER_UPLOAD=move), the official CLI (`upload --recursive
 * --delete`), the limit (openssl, curl) and, for small files, the bare uploader (plain and with
 * the safe steps), each against a
 * fresh benchmark server so that no run finds the previous one's assets already there.
 */
import { join } from 'node:path';
import { countFiles, makeTemp, removeTemp, syncDisk, type BenchContext } from '../lib/context.js';
import { generate, totalBytes, type FileSpec } from '../lib/generate.js';
import { round, throughput, type Throughput, type ThroughputResult } from '../lib/results.js';
import { startBenchServer, type BenchServer, type ServerStats } from '../lib/server.js';
import { nodeStartMs, runBareUploader } from '../tools/bare-uploader.js';
import { hashLimitMs, networkLimitMs, serverUploadsMs } from '../tools/limits.js';
import { runOfficial, type OfficialCli } from '../tools/official-cli.js';
import { oursIn, runOursOnce } from '../tools/ours.js';

/** Each limit (hash, raw send) is measured this many times and its best run kept. */
const LIMIT_RUNS = 3;

export interface ThroughputDef {
  id: string;
  title: string;
  specs: FileSpec[];
  /** Raised above the largest file (our default of 1000 MB would skip 1 GiB files). */
  maxFileSizeMb: number;
  /**
   * Runs of ours and of the official CLI, taken in turns (ours, CLI, ours, CLI...), each tool
   * reported by its median run. A run of a few seconds on a shared machine varies by ±20%; the
   * turns give both tools the same share of good and bad moments.
   */
  repeats: number;
  /** Also run the bare uploader, plain and with the safe steps (small files: it holds each file whole). */
  bare: boolean;
}

export async function runThroughput(ctx: BenchContext, def: ThroughputDef): Promise<ThroughputResult> {
  const files = def.specs.length;
  const bytes = totalBytes(def.specs);
  const notes: string[] = [];

  const oursRuns: Throughput[] = [];
  const officialRuns: Throughput[] = [];
  const bareRuns: Throughput[] = [];
  const safeRuns: Throughput[] = [];
  const startMs = def.bare ? nodeStartMs(ctx.node.path) : 0;
  const cli = ctx.official;
  if (!cli) notes.push('The official CLI could not be installed: no comparison.');
  for (let turn = 1; turn <= def.repeats; turn++) {
    oursRuns.push(await runOurs(ctx, def, turn));
    if (cli) officialRuns.push(await runOfficialCli(ctx, def, cli, turn));
    if (def.bare) {
      bareRuns.push(await runBare(ctx, def, turn, startMs, false));
      safeRuns.push(await runBare(ctx, def, turn, startMs, true));
    }
  }
  const ours = median(oursRuns);
  const official = cli ? median(officialRuns) : undefined;
  const bare = def.bare ? median(bareRuns) : undefined;
  const safe = def.bare ? median(safeRuns) : undefined;
  if (def.repeats > 1) {
    const times = (runs: Throughput[]): string => runs.map((run) => (run.ms / 1000).toFixed(2)).join(', ');
    notes.push(
      `${def.repeats} runs of each tool, in turns; the medians are shown. Ours: ${times(oursRuns)} s` +
        (cli ? `; the official CLI: ${times(officialRuns)} s` : '') +
        (def.bare ? `; the bare uploader: ${times(bareRuns)} s; with the safe steps: ${times(safeRuns)} s` : '') +
        '.',
    );
  }
  if (def.bare) {
    notes.push(
      'The bare uploader reads, SHA-1s and uploads each file, and does nothing else (no duplicate check, ' +
        'journal, settling, archiving or logging). It times its own work; its time adds the start and exit of an ' +
        `empty Node process (${Math.round(startMs)} ms, measured in this run). With the safe steps, it also does ` +
        'what ours does to keep each file safe, the leanest way: the journal with the same transitions, a second ' +
        'look before the read, a look for its XMP sidecar, the duplicate check, a hard link into the archive checked to be the uploaded ' +
        'version, a shared folder fsync, the unlink and a log line per file.',
    );
  }

  const { hash, network, serverUploads } = await withFreshCopy(
    ctx,
    def,
    'limit',
    async (dir, server) => {
      const limitFiles = def.specs.map((spec) => ({ path: join(dir, 'in', spec.rel), size: spec.size }));
      // A limit is what the machine can do: the best of LIMIT_RUNS (one run of the raw send
      // varied by half from one benchmark run to the next).
      let hashMs = Number.POSITIVE_INFINITY;
      for (let run = 0; run < LIMIT_RUNS; run++) hashMs = Math.min(hashMs, await hashLimitMs(limitFiles, ctx.concurrency, dir));
      let network: Throughput | undefined;
      for (let run = 0; run < LIMIT_RUNS; run++) {
        const cpuBefore = server.cpuMs();
        const sent = serverShare(server, cpuBefore, throughput(await networkLimitMs(limitFiles, server.sinkUrl, ctx.concurrency, dir), files, bytes));
        if (!network || sent.ms < network.ms) network = sent;
      }
      if (!network) throw new Error('limit runs: no send measured');
      const cpuBefore = server.cpuMs();
      const serverUploads = serverShare(server, cpuBefore, throughput(await serverUploadsMs(limitFiles, server, ctx.concurrency, dir), files, bytes));
      return { hash: throughput(hashMs, files, bytes), network, serverUploads };
    },
    (stats) => {
      const sent = { requests: files * LIMIT_RUNS, bytes: bytes * LIMIT_RUNS };
      if (stats.sinkRequests !== sent.requests || stats.sinkBytes !== sent.bytes || stats.uploads !== files || stats.bytesReceived !== bytes) {
        throw new Error(
          `limit runs: the sink received ${stats.sinkRequests} requests (${stats.sinkBytes} bytes), the server ${stats.uploads} uploads ` +
            `(${stats.bytesReceived} bytes); expected ${sent.requests} (${sent.bytes}) and ${files} (${bytes})`,
        );
      }
    },
  );
  const bound = hash.ms >= network.ms ? 'hash' : 'network';
  const limit = { ...(bound === 'hash' ? hash : network), bound } as const;
  const serial = throughput(hash.ms + network.ms, files, bytes);

  // Same files and bytes for every tool: a throughput ratio is the inverse ratio of the times.
  const ratios = {
    ...(official ? { oursOverOfficial: round(official.ms / ours.ms) } : {}),
    oursOverLimit: round(limit.ms / ours.ms),
    oursOverSerial: round(serial.ms / ours.ms),
    oursOverServerUploads: round(serverUploads.ms / ours.ms),
    ...(bare ? { oursOverBare: round(bare.ms / ours.ms) } : {}),
    ...(bare && official ? { bareOverOfficial: round(official.ms / bare.ms) } : {}),
    ...(safe ? { oursOverSafe: round(safe.ms / ours.ms) } : {}),
    ...(safe && official ? { safeOverOfficial: round(official.ms / safe.ms) } : {}),
  };
  return {
    kind: 'throughput',
    id: def.id,
    title: def.title,
    files,
    totalBytes: bytes,
    concurrency: ctx.concurrency,
    ours,
    ...(official ? { official } : {}),
    hash,
    network,
    serverUploads,
    ...(bare ? { bare } : {}),
    ...(safe ? { safe } : {}),
    limit,
    serial,
    ratios,
    targets: [],
    notes,
  };
}

/** One run of ours (`once`, move mode) over a fresh copy of the workload. */
function runOurs(ctx: BenchContext, def: ThroughputDef, turn: number): Promise<Throughput> {
  const files = def.specs.length;
  const bytes = totalBytes(def.specs);
  return withFreshCopy(ctx, def, toolName('ours', def, turn), async (dir, server) => {
    const archive = join(dir, 'archive');
    const cpuBefore = server.cpuMs();
    const run = await runOursOnce(
      oursIn(dir, ctx, server, {
        afterUpload: 'move',
        stabilityWaitSeconds: 0,
        maxFileSizeMb: def.maxFileSizeMb,
        ...(ctx.profileDir !== undefined ? { cpuProfDir: join(ctx.profileDir, def.id) } : {}),
      }),
    );
    const archived = await countFiles(archive);
    const left = await countFiles(join(dir, 'in'));
    if (archived !== files || left !== 0) throw new Error(`ours: ${archived} of ${files} archived, ${left} left in the watch folder`);
    if (run.summary && run.summary.uploaded !== files) throw new Error(`ours: summary says ${run.summary.uploaded} uploaded of ${files}`);
    return serverShare(server, cpuBefore, throughput(run.exit.ms, files, bytes, run.exit));
  });
}

/** One run of the bare uploader (bench/tools/bare-uploader.ts), plain or safe, over a fresh copy of the workload. */
function runBare(ctx: BenchContext, def: ThroughputDef, turn: number, startMs: number, safe: boolean): Promise<Throughput> {
  const name = safe ? 'bare uploader with the safe steps' : 'bare uploader';
  return withFreshCopy(ctx, def, toolName(safe ? 'safe' : 'bare', def, turn), async (dir, server) => {
    const cpuBefore = server.cpuMs();
    const archive = join(dir, 'archive');
    const steps = safe ? { archive, state: join(dir, 'state') } : undefined;
    const run = await runBareUploader(ctx.node.path, join(dir, 'in'), server, ctx.concurrency, startMs, steps);
    if (run.uploaded !== def.specs.length) throw new Error(`${name}: ${run.uploaded} of ${def.specs.length} uploaded`);
    if (safe && (await countFiles(archive)) !== def.specs.length) throw new Error(`${name}: not every file was archived`);
    const result = throughput(run.ms, def.specs.length, totalBytes(def.specs));
    // Both shares over the time it worked, as for the others.
    result.cpuPct = Math.round((100 * run.cpuMs) / run.workMs);
    result.serverCpuPct = Math.round((100 * (server.cpuMs() - cpuBefore)) / run.workMs);
    return result;
  });
}

/** One run of the official CLI (`upload --recursive --delete`) over a fresh copy of the workload. */
function runOfficialCli(ctx: BenchContext, def: ThroughputDef, cli: OfficialCli, turn: number): Promise<Throughput> {
  const files = def.specs.length;
  const bytes = totalBytes(def.specs);
  return withFreshCopy(ctx, def, toolName('official', def, turn), async (dir, server) => {
    const cpuBefore = server.cpuMs();
    const exit = await runOfficial({ cli, server, dir: join(dir, 'in'), concurrency: ctx.concurrency, cwd: dir });
    const left = await countFiles(join(dir, 'in'));
    if (left !== 0) throw new Error(`official CLI: ${left} files left after --delete`);
    return serverShare(server, cpuBefore, throughput(exit.ms, files, bytes, exit));
  });
}

function toolName(tool: string, def: ThroughputDef, turn: number): string {
  return def.repeats > 1 ? `${tool}-${turn}` : tool;
}

/** The run with the median time (the upper middle one of an even count). */
function median(runs: readonly Throughput[]): Throughput {
  const sorted = [...runs].sort((a, b) => a.ms - b.ms);
  const middle = sorted[Math.floor(sorted.length / 2)];
  if (!middle) throw new Error('no runs to take the median of');
  return middle;
}

/** How busy the benchmark server was during a run: near 100% would make it the bottleneck. */
function serverShare(server: BenchServer, cpuBefore: number, result: Throughput): Throughput {
  result.serverCpuPct = Math.round((100 * (server.cpuMs() - cpuBefore)) / result.ms);
  return result;
}

/**
 * Generates the workload into a new temporary folder (`in/`), starts a fresh server, runs `body`,
 * checks what the server received (every file, every byte, unless `check` says otherwise), and
 * removes everything.
 */
async function withFreshCopy<T>(
  ctx: BenchContext,
  def: ThroughputDef,
  tool: string,
  body: (dir: string, server: BenchServer) => Promise<T>,
  check?: (stats: ServerStats) => void,
): Promise<T> {
  const dir = await makeTemp(ctx, `${def.id}-${tool}`);
  try {
    await generate(join(dir, 'in'), def.specs, ctx.seed);
    syncDisk();
    const server = await startBenchServer();
    const outcome = await body(dir, server).then(
      (value) => ({ ok: true as const, value }),
      (error: unknown) => ({ ok: false as const, error }),
    );
    const stats = await server.stop();
    if (!outcome.ok) throw outcome.error;
    if (check) check(stats);
    else if (stats.uploads !== def.specs.length || stats.bytesReceived !== totalBytes(def.specs)) {
      throw new Error(`${tool}: the server received ${stats.uploads} uploads, ${stats.bytesReceived} bytes`);
    }
    const result = outcome.value;
    ctx.log(`  ${def.id} / ${tool}: done`);
    return result;
  } finally {
    await removeTemp(dir);
  }
}

/** Targets of the throughput workloads, set once all are measured (flatness compares two of them). */
export function throughputTargets(results: readonly ThroughputResult[]): void {
  const small = results.find((r) => r.id === 'small');
  if (small?.official && small.ratios.oursOverOfficial !== undefined) {
    small.targets.push({
      workload: 'small',
      name: 'files/s vs the official CLI',
      goal: '>= 2x',
      // Beside it, what the leanest uploader with the same guarantees reaches here.
      measured:
        `${small.ratios.oursOverOfficial}x (${small.ours.filesPerSec.toFixed(1)} vs ${small.official.filesPerSec.toFixed(1)} files/s)` +
        (small.ratios.safeOverOfficial === undefined ? '' : `; bare with safe steps ${small.ratios.safeOverOfficial}x`),
      pass: small.ratios.oursOverOfficial >= 2,
    });
  }
  const large = results.filter((r) => r.id.startsWith('large'));
  for (const r of large) {
    r.targets.push(
      {
        workload: r.id,
        name: 'throughput vs the limit',
        goal: '>= 0.9x',
        measured: `${r.ratios.oursOverLimit}x (${r.ours.mibPerSec} vs ${r.limit.mibPerSec} MB/s, ${r.limit.bound}-bound)`,
        pass: r.ratios.oursOverLimit >= 0.9,
      },
      {
        workload: r.id,
        name: 'peak RSS',
        goal: '<= 120 MB',
        measured: `${r.ours.peakRssMib ?? Number.NaN} MB`,
        pass: (r.ours.peakRssMib ?? Number.POSITIVE_INFINITY) <= 120,
      },
    );
  }
  // Flat in file size: the largest files need no more memory than the next smaller ones (+20%, +10 MB).
  const bySize = [...results].sort((a, b) => a.totalBytes / a.files - b.totalBytes / b.files);
  const largest = bySize.at(-1);
  const reference = bySize.at(-2);
  if (largest?.id.startsWith('large') === true && reference?.ours.peakRssMib !== undefined && largest.ours.peakRssMib !== undefined) {
    const kb = (r: ThroughputResult): string => sizeLabel(r.totalBytes / r.files);
    largest.targets.push({
      workload: largest.id,
      name: 'peak RSS flat in file size',
      goal: `<= 1.2x the ${kb(reference)} files' + 10 MB`,
      measured: `${largest.ours.peakRssMib} MB (${kb(largest)}) vs ${reference.ours.peakRssMib} MB (${kb(reference)})`,
      pass: largest.ours.peakRssMib <= reference.ours.peakRssMib * 1.2 + 10,
    });
  }
}

function sizeLabel(bytes: number): string {
  if (bytes >= 1024 ** 3) return `${Math.round(bytes / 1024 ** 3)} GiB`;
  if (bytes >= 1024 ** 2) return `${Math.round(bytes / 1024 ** 2)} MB`;
  return `${Math.round(bytes / 1024)} KB`;
}
