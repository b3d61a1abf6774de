/**
 * Our uploader as the user runs it: `node <the flags of npm start> dist/cli.js once|watch`,
 * configured only through the environment, JSON logs on stdout.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BenchContext } from '../lib/context.js';
import { OUR_CLI, REPO_ROOT } from '../lib/paths.js';
import { runChecked, startMeasured, type Exit, type Measured } from '../lib/proc.js';
import type { BenchServer } from '../lib/server.js';
import type { StatsSnapshot } from '../../src/pipeline/stats.js';

export interface OursConfig {
  /** The Node binary to run ours with. */
  node: string;
  server: BenchServer;
  watch: string;
  archive: string;
  /** A temporary journal folder: never the user's own. */
  state: string;
  afterUpload: 'move' | 'keep' | 'delete';
  concurrency: number;
  stabilityWaitSeconds: number;
  stabilityIntervalSeconds?: number;
  maxFileSizeMb?: number;
  /** Writes a V8 CPU profile (node --cpu-prof) into this folder. */
  cpuProfDir?: string;
  /** Working directory (our CLI reads ./.env from it: a temporary folder has none). */
  cwd: string;
  /** More variables, e.g. an option no other workload sets. */
  env?: Record<string, string>;
  /** More Node flags, after those of `npm start`. */
  nodeFlags?: string[];
}

/** The settings every workload gives alike; `oursIn` fills them in. */
type Placed = 'node' | 'server' | 'watch' | 'archive' | 'state' | 'concurrency' | 'cwd';

/**
 * Ours for a workload in its temporary folder `dir`: watching `dir/in`, archiving into
 * `dir/archive`, its journal in `dir/state`, at the bench's concurrency, on the bench's Node.
 */
export function oursIn(dir: string, ctx: Pick<BenchContext, 'node' | 'concurrency'>, server: BenchServer, rest: Omit<OursConfig, Placed>): OursConfig {
  return {
    node: ctx.node.path,
    server,
    watch: join(dir, 'in'),
    archive: join(dir, 'archive'),
    state: join(dir, 'state'),
    concurrency: ctx.concurrency,
    cwd: dir,
    ...rest,
  };
}

/** One JSON log line of ours (pino). */
export interface LogLine {
  level: number;
  time: number;
  msg: string;
  [field: string]: unknown;
}

/** The fields of our final `summary:` log line. */
export type Summary = StatsSnapshot;

export function parseLog(line: string): LogLine | undefined {
  if (!line.startsWith('{')) return undefined;
  try {
    return JSON.parse(line) as LogLine;
  } catch {
    return undefined;
  }
}

function environment(config: OursConfig): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: config.cwd,
    IMMICH_API_URL: config.server.url,
    IMMICH_API_KEY: config.server.key,
    WATCH_DIRECTORIES: config.watch,
    ARCHIVE_DIRECTORY: config.archive,
    STATE_DIRECTORY: config.state,
    AFTER_UPLOAD: config.afterUpload,
    UPLOAD_CONCURRENCY: String(config.concurrency),
    FILE_STABILITY_WAIT_SECONDS: String(config.stabilityWaitSeconds),
    ...(config.stabilityIntervalSeconds !== undefined
      ? { FILE_STABILITY_CHECK_INTERVAL: String(config.stabilityIntervalSeconds) }
      : {}),
    ...(config.maxFileSizeMb !== undefined ? { MAX_FILE_SIZE_MB: String(config.maxFileSizeMb) } : {}),
    LOG_FORMAT: 'json',
    LOG_LEVEL: 'info',
    ...config.env,
  };
}

/** The Node flags `npm start` gives the uploader (package.json's `start` script, the one place they are set). */
function startNodeFlags(): string[] {
  const { scripts } = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { scripts: { start: string } };
  const flags = /\bnode((?: --\S+)*) dist\/cli\.js\b/.exec(scripts.start)?.[1];
  if (flags === undefined) throw new Error(`package.json's start script no longer runs \`node ... dist/cli.js\`: ${scripts.start}`);
  return flags.split(' ').filter((flag) => flag !== '');
}
const START_NODE_FLAGS = startNodeFlags();

function nodeArgs(command: 'once' | 'watch', config: OursConfig): string[] {
  const profile = config.cpuProfDir !== undefined ? ['--cpu-prof', `--cpu-prof-dir=${config.cpuProfDir}`] : [];
  return [...START_NODE_FLAGS, ...(config.nodeFlags ?? []), ...profile, OUR_CLI, command];
}

export interface OnceResult {
  exit: Exit;
  summary: Summary | undefined;
}

/** `once`: process start to exit, and its final summary. Rejects if it exits non-zero. */
export async function runOursOnce(config: OursConfig): Promise<OnceResult> {
  let summary: Summary | undefined;
  const exit = await runChecked(config.node, nodeArgs('once', config), {
    cwd: config.cwd,
    env: environment(config),
    onStdoutLine: (line) => {
      const log = parseLog(line);
      if (log?.msg.startsWith('summary:')) summary = log as unknown as Summary;
    },
  });
  return { exit, summary };
}

/** `watch`, running until killed; every JSON log line goes to `onLog`. */
export function startOursWatch(config: OursConfig, onLog: (log: LogLine, at: number) => void): Measured {
  return startMeasured(config.node, nodeArgs('watch', config), {
    cwd: config.cwd,
    env: environment(config),
    onStdoutLine: (line, at) => {
      const log = parseLog(line);
      if (log) onLog(log, at);
    },
  });
}
