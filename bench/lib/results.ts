/** What a benchmark run produces: one record per workload, and the run around them. */

/** 1 MiB: every MB in the benchmark's output is 2^20 bytes. */
export const MIB = 1024 * 1024;

export interface Throughput {
  ms: number;
  files: number;
  bytes: number;
  filesPerSec: number;
  mibPerSec: number;
  /** Peak resident set measured from outside the process (ours and the official CLI only). */
  peakRssMib?: number;
  /** The tool's CPU time (user + system) as a percentage of its wall time; 200% = both of 2 cores. */
  cpuPct?: number;
  /** The benchmark server's CPU time during the run, as a percentage of the run's wall time. */
  serverCpuPct?: number;
}

export interface Target {
  workload: string;
  name: string;
  goal: string;
  measured: string;
  pass: boolean;
}

export interface ThroughputResult {
  kind: 'throughput';
  id: string;
  title: string;
  files: number;
  totalBytes: number;
  concurrency: number;
  ours: Throughput;
  official?: Throughput;
  hash: Throughput;
  network: Throughput;
  /** curl uploading every file to the fake Immich (multipart, parsed and SHA-1ed there): what the server can take. */
  serverUploads: Throughput;
  /** Small files only: the bare uploader (bench/tools/bare-uploader.ts): its work plus an empty Node start. */
  bare?: Throughput;
  /** Small files only: the bare uploader with the safe steps, the leanest way (same measure). */
  safe?: Throughput;
  /** The slower of hash and network. */
  limit: Throughput & { bound: 'hash' | 'network' };
  /** Hash then send, one after the other: the bound for a tool that reads every file twice, in series. */
  serial: Throughput;
  /** ours / each of the others (time ratios, inverted), and the bare uploader (plain, safe) / the official CLI. */
  ratios: {
    oursOverOfficial?: number;
    oursOverLimit: number;
    oursOverSerial: number;
    oursOverServerUploads: number;
    oursOverBare?: number;
    bareOverOfficial?: number;
    oursOverSafe?: number;
    safeOverOfficial?: number;
  };
  targets: Target[];
  notes: string[];
}

export interface LatencyResult {
  kind: 'latency';
  id: string;
  title: string;
  files: number;
  fileBytes: number;
  stabilityWaitMs: number;
  checkIntervalMs: number;
  /** Time from the file's appearance (rename into the folder) to its `uploaded` line, minus the stability wait. */
  samplesMs: number[];
  p50Ms: number;
  p95Ms: number;
  maxMs: number;
  peakRssMib: number;
  targets: Target[];
  notes: string[];
}

export interface ScaleResult {
  kind: 'scale';
  id: string;
  title: string;
  files: number;
  folders: number;
  /** The first run, which filled the journal (once, keep mode). */
  fillMs: number;
  fillPeakRssMib: number;
  /** Second start: process start to the `watching` line. */
  readyMs: number;
  peakRssMib: number;
  summary: { unchanged: number; hashed: number; uploaded: number };
  targets: Target[];
  notes: string[];
}

/** One round of the endurance workload, read once the round's files were all archived. */
export interface EnduranceSample {
  round: number;
  /** Files handled since the start, this round's included. */
  files: number;
  /** From moving the round's folder in to its last file uploaded and the folder removed. */
  seconds: number;
  /** VmRSS, read from outside just before the probe's collections. */
  rssMib: number;
  /** After two full garbage collections (the heap probe). */
  heapMib: number;
  externalMib: number;
  rssAfterGcMib: number;
}

export interface EnduranceResult {
  kind: 'endurance';
  id: string;
  title: string;
  rounds: number;
  filesPerRound: number;
  fileBytes: number;
  warmupRounds: number;
  samples: EnduranceSample[];
  /** Least-squares slopes over the rounds after the warm-up. */
  heapGrowthMibPer10k: number;
  rssGrowthMibPer10k: number;
  /** The last folder, many times what the pipeline takes in at once: heap after GC every fifth of the way. */
  burst?: { files: number; seconds: number; heapMib: number[] };
  peakRssMib: number;
  targets: Target[];
  notes: string[];
}

export type WorkloadResult = ThroughputResult | LatencyResult | ScaleResult | EnduranceResult;

export interface Machine {
  cpus: number;
  cpuModel: string;
  memoryGib: number;
  /** The Node that ran ours and the bare uploader. */
  node: string;
  officialCliNode?: string;
  os: string;
  tmpFs: string;
  /** 1-minute load average at the start and the end of the run: above ~0.5 something else was running. */
  loadAverage?: { start: number; end: number };
}

export interface BenchRun {
  mode: 'quick' | 'default' | 'full';
  startedAt: string;
  durationS: number;
  commit: string;
  machine: Machine;
  concurrency: number;
  results: WorkloadResult[];
  /** Workloads that could not be measured, with why. */
  errors: { workload: string; error: string }[];
}

export function throughput(ms: number, files: number, bytes: number, process?: { peakRssBytes: number; cpuMs: number }): Throughput {
  const seconds = ms / 1000;
  return {
    ms: Math.round(ms),
    files,
    bytes,
    filesPerSec: round(files / seconds, 3),
    mibPerSec: round(bytes / MIB / seconds, 1),
    ...(process ? { peakRssMib: round(process.peakRssBytes / MIB, 1), cpuPct: Math.round((100 * process.cpuMs) / ms) } : {}),
  };
}

export function round(value: number, digits = 2): number {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}

export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  // Nearest rank.
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))] ?? Number.NaN;
}
