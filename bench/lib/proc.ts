/**
 * Child processes the benchmark measures: wall time from spawn to exit, peak RSS from outside,
 * and their output line by line (with the time each line arrived) for tools whose progress is
 * read from their logs.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { sampleRss } from './rss.js';

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Wall time from spawn to exit. */
  ms: number;
  /** Peak resident set (VmHWM) in bytes, sampled every 50 ms from outside. */
  peakRssBytes: number;
  /** CPU time (user + system) of the process, as last sampled (up to 50 ms before its exit). */
  cpuMs: number;
  /** The last lines of stdout and stderr, for error messages. */
  stdoutTail: string[];
  stderrTail: string[];
}

export interface Measured {
  readonly pid: number;
  readonly child: ChildProcess;
  /** performance.now() at spawn. */
  readonly startedAt: number;
  readonly exit: Promise<Exit>;
  kill(signal?: NodeJS.Signals): void;
}

export interface MeasureOptions {
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** Each stdout line, with performance.now() at its arrival. */
  onStdoutLine?: (line: string, at: number) => void;
  onStderrLine?: (line: string, at: number) => void;
  /** Lines kept for the tails (default 40). */
  tailLines?: number;
}

/** Every child the benchmark started and that has not exited yet: killed if the bench is interrupted. */
export const liveChildren = new Set<ChildProcess>();

export function startMeasured(command: string, args: string[], options: MeasureOptions): Measured {
  const tailLines = options.tailLines ?? 40;
  const startedAt = performance.now();
  const child = spawn(command, args, { cwd: options.cwd, env: options.env, stdio: ['ignore', 'pipe', 'pipe'] });
  if (child.pid === undefined) throw new Error(`could not start ${command}`);
  const pid = child.pid;
  liveChildren.add(child);
  const rss = sampleRss(pid);
  const stdoutTail: string[] = [];
  const stderrTail: string[] = [];
  const keep = (tail: string[], line: string): void => {
    tail.push(line);
    if (tail.length > tailLines) tail.shift();
  };
  const stdoutDone = readLines(child.stdout, (line) => {
    keep(stdoutTail, line);
    options.onStdoutLine?.(line, performance.now());
  });
  const stderrDone = readLines(child.stderr, (line) => {
    keep(stderrTail, line);
    options.onStderrLine?.(line, performance.now());
  });
  const exit = new Promise<Exit>((resolve, reject) => {
    child.once('error', (error) => {
      rss.stop();
      liveChildren.delete(child);
      reject(error);
    });
    child.once('exit', (code, signal) => {
      const ms = performance.now() - startedAt;
      rss.stop();
      liveChildren.delete(child);
      // The tails are complete once both streams have ended.
      void Promise.all([stdoutDone, stderrDone]).then(() =>
        resolve({ code, signal, ms, peakRssBytes: rss.peakBytes, cpuMs: rss.cpuMs, stdoutTail, stderrTail }),
      );
    });
  });
  return {
    pid,
    child,
    startedAt,
    exit,
    kill: (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
  };
}

function readLines(stream: NodeJS.ReadableStream | null, onLine: (line: string) => void): Promise<void> {
  if (!stream) return Promise.resolve();
  const lines = createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY });
  lines.on('line', onLine);
  return new Promise((resolve) => lines.once('close', () => resolve()));
}

/** Runs a command to completion; rejects with its output tails when it exits non-zero. */
export async function runChecked(command: string, args: string[], options: MeasureOptions): Promise<Exit> {
  const exit = await startMeasured(command, args, options).exit;
  if (exit.code !== 0) throw new Error(failureMessage(command, args, exit));
  return exit;
}

export function failureMessage(command: string, args: string[], exit: Exit): string {
  const how = exit.signal !== null ? `was killed by ${exit.signal}` : `exited with ${exit.code}`;
  const output = [...exit.stdoutTail.slice(-15), ...exit.stderrTail.slice(-15)].join('\n');
  return `${command} ${args.slice(0, 4).join(' ')}${args.length > 4 ? ' ...' : ''} ${how}\n${output}`;
}
