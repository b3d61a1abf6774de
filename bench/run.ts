/**
 * `npm run bench [-- --quick | --full] [--concurrency N] [--only small,large,latency,scale,endurance] [--node MAJOR] [--profile] [--tmp DIR]`
 *
 * Measures the uploader end to end beside the official Immich CLI and the machine's limit, in one
 * run, and reports ratios (absolute times on shared machines drift; ratios measured together hold).
 * Writes bench/results/latest.json; a complete default or full run also rewrites the generated
 * block of docs/BENCHMARKS.md and docs/benchmarks.svg. Targets are reported as pass/miss: the
 * exit code is 0 unless a workload could not be measured at all.
 */
import { existsSync, readFileSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { parseArgs } from 'node:util';
import type { BenchContext, Mode } from './lib/context.js';
import { currentLoad, describeCommit, describeMachine } from './lib/machine.js';
import { DOCS_MD, DOCS_SVG, OUR_CLI, RESULTS_DIR, REPO_ROOT } from './lib/paths.js';
import { liveChildren } from './lib/proc.js';
import { markdownBlock, svgChart, terminalReport, updateMarkdown, writeJson } from './lib/report.js';
import { MIB, round, type BenchRun, type ThroughputResult, type WorkloadResult } from './lib/results.js';
import { ensureNode, runningNode } from './tools/node.js';
import { ensureOfficialCli } from './tools/official-cli.js';
import { runEndurance, type EnduranceDef } from './workloads/endurance.js';
import { runLatency, type LatencyDef } from './workloads/latency.js';
import { runScale, type ScaleDef } from './workloads/scale.js';
import { runThroughput, throughputTargets, type ThroughputDef } from './workloads/throughput.js';
import type { FileSpec } from './lib/generate.js';

const GIB = 1024 * MIB;
const WORKLOADS = ['small', 'large', 'latency', 'scale', 'endurance'] as const;
type WorkloadId = (typeof WORKLOADS)[number];

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    full: { type: 'boolean', default: false },
    concurrency: { type: 'string', default: '4' },
    only: { type: 'string' },
    node: { type: 'string' },
    profile: { type: 'boolean', default: false },
    tmp: { type: 'string' },
    report: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});

if (values.help) {
  process.stdout.write(
    'npm run bench -- [--quick | --full] [--concurrency N] [--only small,large,latency,scale,endurance] [--node MAJOR] [--profile] [--tmp DIR]\n' +
      '  --quick        small workloads (< 2 minutes), for development\n' +
      '  --full         adds one 4 GiB file (needs ~10 GB free in the temp folder)\n' +
      '  --concurrency  uploads at a time for every tool (default 4, our default)\n' +
      '  --only         run only these workloads (the docs are then not rewritten)\n' +
      '  --node MAJOR   run ours and the bare uploader on that Node, e.g. 24, installed into .tools\n' +
      '                 once (default: the Node running the bench; the docs are then not rewritten)\n' +
      '  --profile      write CPU profiles of our runs into bench/results/profiles/\n' +
      '  --tmp          where the workload files are made (default: the system temp folder)\n' +
      '  --report FILE  measure nothing: print a saved run (bench/results/*.json) and rewrite the docs from it\n',
  );
  process.exit(0);
}
if (values.quick && values.full) fail('--quick and --full exclude each other');
const mode: Mode = values.quick ? 'quick' : values.full ? 'full' : 'default';
const concurrency = Number(values.concurrency);
if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 32) fail(`--concurrency: expected 1 to 32, got ${values.concurrency}`);
const only = new Set<WorkloadId>(
  values.only === undefined
    ? WORKLOADS
    : values.only.split(',').map((name) => {
        const id = name.trim() as WorkloadId;
        if (!WORKLOADS.includes(id)) fail(`--only: expected some of ${WORKLOADS.join(',')}, got ${name}`);
        return id;
      }),
);
const tmpRoot = values.tmp ?? tmpdir();
const nodeMajor = values.node === undefined ? undefined : Number(values.node);
if (nodeMajor !== undefined && !(Number.isInteger(nodeMajor) && nodeMajor >= 20)) fail(`--node: expected a Node major version of 20 or more, e.g. 24, got ${values.node}`);

/** Sizes per mode. */
const SIZES = {
  quick: {
    small: { files: 300, bytes: 200 * 1024 },
    large: { files: 2, bytes: 256 * MIB },
    latency: 15,
    scale: { files: 10_000, folders: 1_000 },
    endurance: { rounds: 4, filesPerRound: 500, warmupRounds: 1, burstFiles: 5_000 },
  },
  default: {
    small: { files: 2_000, bytes: 200 * 1024 },
    large: { files: 4, bytes: GIB },
    latency: 50,
    scale: { files: 100_000, folders: 10_000 },
    endurance: { rounds: 25, filesPerRound: 2_000, warmupRounds: 10, burstFiles: 50_000 },
  },
} as const;
const sizes = SIZES[mode === 'quick' ? 'quick' : 'default'];
/** Runs of each tool over the small files (see ThroughputDef.repeats). */
const SMALL_REPEATS = 3;
/** Free space needed in the temp folder: the largest workload's files, plus room. */
const NEEDED_BYTES = mode === 'quick' ? 2 * GIB : mode === 'full' ? 10 * GIB : 6 * GIB;

function fail(message: string): never {
  process.stderr.write(`bench: ${message}\n`);
  process.exit(2);
}

function log(message: string): void {
  process.stderr.write(`${message}\n`);
}

function label(bytes: number): string {
  return bytes >= GIB ? `${bytes / GIB} GiB` : bytes >= MIB ? `${bytes / MIB} MB` : `${bytes / 1024} KB`;
}

function specs(prefix: string, files: number, bytes: number, ext: string, perFolder: number): FileSpec[] {
  return Array.from({ length: files }, (_, i) => ({
    rel: `${prefix}${String(Math.floor(i / perFolder)).padStart(3, '0')}/${prefix}-${String(i).padStart(5, '0')}.${ext}`,
    size: bytes,
  }));
}

// Ctrl+C: stop what we started (each by its own handle), then exit; temp folders are named iau-bench-*.
process.on('SIGINT', () => {
  for (const child of liveChildren) child.kill('SIGTERM');
  log('bench: interrupted; temporary folders iau-bench-* may remain in the temp folder');
  process.exit(130);
});

async function main(): Promise<void> {
  const startedAt = new Date();
  // What is measured: dist/ was just built from this tree.
  const commit = describeCommit();
  const loadAtStart = currentLoad();
  if (loadAtStart > 0.5) log(`bench: the load average is ${loadAtStart}: something else runs here, and may skew the ratios`);
  if (!existsSync(OUR_CLI)) fail(`${relative(REPO_ROOT, OUR_CLI)} is missing: run \`npm run build\` (npm run bench does)`);
  const fs = statfsSync(tmpRoot);
  const free = fs.bavail * fs.bsize;
  if (free < NEEDED_BYTES) {
    fail(`${tmpRoot} has ${label(free)} free; ${mode} mode needs about ${label(NEEDED_BYTES)} (use --tmp DIR or --quick)`);
  }

  let node: BenchContext['node'];
  try {
    node = nodeMajor === undefined ? runningNode() : ensureNode(nodeMajor, log);
  } catch (error) {
    fail(String(error instanceof Error ? error.message : error));
  }
  let official: BenchContext['official'];
  try {
    official = ensureOfficialCli(log);
  } catch (error) {
    log(`bench: ${String(error)}; running without the official CLI`);
  }
  const ctx: BenchContext = {
    mode,
    concurrency,
    tmpRoot,
    seed: 'immich-auto-uploader-bench-1',
    node,
    ...(official ? { official } : {}),
    ...(values.profile ? { profileDir: join(RESULTS_DIR, 'profiles') } : {}),
    log,
  };

  const results: WorkloadResult[] = [];
  const errors: BenchRun['errors'] = [];
  const attempt = async (id: string, work: () => Promise<WorkloadResult>): Promise<void> => {
    log(`bench: ${id} ...`);
    try {
      results.push(await work());
    } catch (error) {
      log(`bench: ${id} failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
      errors.push({ workload: id, error: error instanceof Error ? error.message : String(error) });
    }
  };

  const throughputDefs: ThroughputDef[] = [];
  if (only.has('small')) {
    const { files, bytes } = sizes.small;
    throughputDefs.push({
      id: 'small',
      title: `Small files: ${files.toLocaleString('en')} x ${label(bytes)}`,
      specs: specs('img', files, bytes, 'jpg', 100),
      maxFileSizeMb: 1000,
      // A few seconds per run: the median of three, except in quick mode.
      repeats: mode === 'quick' ? 1 : SMALL_REPEATS,
      bare: true,
    });
  }
  if (only.has('large')) {
    const { files, bytes } = sizes.large;
    throughputDefs.push({
      id: 'large',
      title: `Large files: ${files} x ${label(bytes)}`,
      specs: specs('video', files, bytes, 'mp4', 100),
      maxFileSizeMb: 5 * 1024,
      repeats: 1,
      bare: false,
    });
    if (mode === 'full') {
      throughputDefs.push({ id: 'large-4g', title: 'One 4 GiB file: 1 x 4 GiB', specs: specs('huge', 1, 4 * GIB, 'mp4', 1), maxFileSizeMb: 5 * 1024, repeats: 1, bare: false });
    }
  }
  for (const def of throughputDefs) await attempt(def.id, () => runThroughput(ctx, def));
  throughputTargets(results.filter((r): r is ThroughputResult => r.kind === 'throughput'));

  if (only.has('latency')) {
    const def: LatencyDef = { files: sizes.latency, fileBytes: 5 * MIB, stabilityWaitSeconds: 0.5, checkIntervalSeconds: 0.05 };
    await attempt('latency', () => runLatency(ctx, def));
  }
  if (only.has('scale')) {
    const def: ScaleDef = { ...sizes.scale, fileBytes: 1024 };
    await attempt('scale', () => runScale(ctx, def));
  }

  if (only.has('endurance')) {
    const def: EnduranceDef = { ...sizes.endurance, fileBytes: 16 * 1024 };
    await attempt('endurance', () => runEndurance(ctx, def));
  }

  const run: BenchRun = {
    mode,
    startedAt: startedAt.toISOString(),
    durationS: round((Date.now() - startedAt.getTime()) / 1000, 0),
    commit,
    machine: describeMachine(tmpRoot, node.version, official?.nodeVersion, loadAtStart),
    concurrency,
    results,
    errors,
  };
  process.stdout.write(terminalReport(run));
  const json = join(RESULTS_DIR, 'latest.json');
  writeJson(json, run);
  const suffix = (values.only === undefined ? '' : `-only-${[...only].join('-')}`) + (nodeMajor === undefined ? '' : `-node${nodeMajor}`);
  writeJson(join(RESULTS_DIR, `${mode}${suffix}-${run.startedAt.replaceAll(':', '-').slice(0, 19)}.json`), run);
  log(`bench: wrote ${relative(REPO_ROOT, json)}`);
  // The docs show the bench's own Node with every workload; other runs are for development.
  if (mode !== 'quick' && values.only === undefined && nodeMajor === undefined) {
    writeFileSync(DOCS_SVG, svgChart(run));
    updateMarkdown(DOCS_MD, markdownBlock(run, 'benchmarks.svg'));
    log(`bench: updated ${relative(REPO_ROOT, DOCS_MD)} and ${relative(REPO_ROOT, DOCS_SVG)}`);
  } else {
    // Development runs leave the docs alone; the chart is still drawn beside the JSON.
    writeFileSync(join(RESULTS_DIR, 'latest.svg'), svgChart(run));
  }
  if (errors.length > 0) process.exitCode = 1;
}

/** `--report FILE`: the docs and the table again from a saved run, e.g. after changing the report's layout. */
function reportOnly(file: string): void {
  const run = JSON.parse(readFileSync(file, 'utf8')) as BenchRun;
  // The throughput targets are derived from the measurements: derive them again with today's rules.
  const saved = run.results.filter((r): r is ThroughputResult => r.kind === 'throughput');
  for (const r of saved) r.targets = [];
  throughputTargets(saved);
  process.stdout.write(terminalReport(run));
  if (run.mode === 'quick') fail('a quick run is not written into the docs');
  writeFileSync(DOCS_SVG, svgChart(run));
  updateMarkdown(DOCS_MD, markdownBlock(run, 'benchmarks.svg'));
  log(`bench: updated ${relative(REPO_ROOT, DOCS_MD)} and ${relative(REPO_ROOT, DOCS_SVG)} from ${file}`);
}

if (values.report !== undefined) reportOnly(values.report);
else await main();
