import { spawn, spawnSync, type ChildProcess, type ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { chownSync, mkdtempSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitFor } from './wait-for.js';

/** The built CLI: end-to-end tests run exactly what users run. */
export const CLI_PATH = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));

/** The unprivileged user root's tests run the CLI as, where root's powers would hide a fault. */
export const NOBODY = { uid: 65534, gid: 65534 };

/**
 * Whether the CLI starts as `user` here: not where the checkout is in a folder only its owner
 * may enter (a private temporary folder, root's home).
 */
export function cliRunsAs(user: { uid: number; gid: number }): boolean {
  return spawnSync(process.execPath, [CLI_PATH, '--version'], { ...user, stdio: 'ignore' }).status === 0;
}

export interface LogLine {
  level: number;
  msg: string;
  [field: string]: unknown;
}

export interface CliRun {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  /** Parsed JSON log lines so far (the CLI logs JSON when not on a terminal). */
  logs: () => LogLine[];
  waitForLog: (predicate: (line: LogLine) => boolean, options?: { timeoutMs?: number; message?: string }) => Promise<LogLine>;
  /** Resolves with the exit code (or the signal's name) when the process ends. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Starts the CLI as a child process with only the given environment (plus PATH and HOME), so
 * the developer's own environment or `.env` cannot leak into a test.
 */
export function startCli(args: string[], options: { env?: Record<string, string>; cwd?: string; user?: { uid: number; gid: number } } = {}): CliRun {
  // A home of its own, so no test reads or writes the developer's journal; removed when it ends.
  const home = mkdtempSync(join(tmpdir(), 'iau-home-'));
  if (options.user) chownSync(home, options.user.uid, options.user.gid);
  const child = spawn(process.execPath, [CLI_PATH, ...args], {
    cwd: options.cwd ?? process.cwd(),
    ...(options.user ?? {}),
    env: {
      PATH: process.env.PATH ?? '',
      HOME: home,
      LOG_FORMAT: 'json',
      LOG_LEVEL: 'debug',
      ...options.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const { stdout, stderr, exited: closed } = captureOutput(child);
  const exited = closed.then(async (how) => {
    await rm(home, { recursive: true, force: true });
    return how;
  });
  const logs = (): LogLine[] =>
    stdout()
      .split('\n')
      .filter((line) => line.startsWith('{') && line.endsWith('}'))
      .flatMap((line) => {
        try {
          return [JSON.parse(line) as LogLine];
        } catch {
          return []; // not a log line (e.g. a line of `status --json`)
        }
      });
  return {
    child,
    stdout,
    stderr,
    logs,
    exited,
    waitForLog: (predicate, waitOptions = {}) =>
      waitFor(() => logs().find(predicate), {
        timeoutMs: waitOptions.timeoutMs ?? 20_000,
        message: () =>
          `${waitOptions.message ?? 'a log line'}; stdout so far:\n${stdout().slice(-3000)}\nstderr:\n${stderr().slice(-2000)}`,
      }),
  };
}

/** Collects a child's output as text, and resolves with how it ended. */
export function captureOutput(child: ChildProcessByStdio<Writable | null, Readable, Readable>): {
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
} {
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal })),
  );
  return { stdout: () => out, stderr: () => err, exited };
}

/** Runs the CLI to its end. */
export async function runCli(
  args: string[],
  options: Parameters<typeof startCli>[1] & { timeoutMs?: number } = {},
): Promise<{ code: number | null; stdout: string; stderr: string; logs: LogLine[] }> {
  const run = startCli(args, options);
  const timeoutMs = options.timeoutMs ?? 60_000;
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      run.child.kill('SIGKILL');
      reject(new Error(`CLI did not exit within ${timeoutMs} ms; stdout:\n${run.stdout().slice(-3000)}\nstderr:\n${run.stderr()}`));
    }, timeoutMs);
  });
  try {
    const { code } = await Promise.race([run.exited, timedOut]);
    return { code, stdout: run.stdout(), stderr: run.stderr(), logs: run.logs() };
  } finally {
    clearTimeout(timer);
  }
}
