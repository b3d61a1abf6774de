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
  /** The slower of hash and network. */
  limit: Throughput & { bound: 'hash' | 'network' };
  /** Hash then send, one after the other: the bound for a tool that reads every file twice, in series. */
  serial: Throughput;
  /** ours / official CLI (files/s; the same bytes, so MB/s alike), ours / limit. */
  ratios: { oursOverOfficial?: number; oursOverLimit: number; oursOverSerial: number };
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

export type WorkloadResult = ThroughputResult | LatencyResult | ScaleResult;

export interface Machine {
  cpus: number;
  cpuModel: string;
  memoryGib: number;
  node: string;
  officialCliNode?: string;
  os: string;
  tmpFs: string;
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

export function throughput(ms: number, files: number, bytes: number, peakRssBytes?: number): Throughput {
  const seconds = ms / 1000;
  return {
    ms: Math.round(ms),
    files,
    bytes,
    filesPerSec: round(files / seconds, 1),
    mibPerSec: round(bytes / MIB / seconds, 1),
    ...(peakRssBytes !== undefined ? { peakRssMib: round(peakRssBytes / MIB, 1) } : {}),
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
