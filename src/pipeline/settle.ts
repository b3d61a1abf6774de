/**
 * Settle: decides when a file has finished being written.
 *
 * Events say a file exists, never that it is complete (a camera card copy or a network transfer
 * can pause for seconds), so a file is ready only when repeated `stat` calls show the same size and
 * mtime for the whole stability window. One loop serves all pending files (one timer, not one per
 * file: 20,000 new files must not mean 20,000 timers): it wakes when the next file is due — every
 * `intervalMs` while a file keeps changing, and exactly when a quiet file's window ends, so a file
 * that arrives complete is handed on at `waitMs` rather than up to an interval later — and stats
 * the due files with bounded concurrency so a large batch does not flood libuv's thread pool.
 */
import { lstat } from 'node:fs/promises';
import { eitherSignal, type Clock } from '../support/clock.js';
import { sameFile, type Candidate, type FileIdentity, type SettledFile } from './types.js';

/** What the settler needs to know about a path; null when the path no longer exists. */
export interface SettleStat {
  size: number;
  mtimeMs: number;
  /** 0 when the file system does not record creation time. */
  birthtimeMs: number;
  /** False for folders, links, sockets...: anything that is not a regular file. */
  isFile: boolean;
  /** The file the path leads to, where the stat says. */
  identity?: FileIdentity;
}

/** Looks at a pending file; `sizeSeen` is its size at the last look (a hint for choosing how). */
export type SettleStatFunction = (path: string, sizeSeen: number) => Promise<SettleStat | null>;

export interface SettlerOptions {
  clock: Clock;
  /** How long size and mtime must hold still before a file counts as written. 0: one unchanged re-check. */
  waitMs: number;
  /** How often a file that keeps changing is stat-ed again (and the longest the loop sleeps). */
  intervalMs: number;
  /** Default: `lstat` (links are not followed), null on ENOENT/ENOTDIR. */
  stat?: SettleStatFunction;
  /** How many stats may be in flight at once during a tick. Default: 8. */
  statConcurrency?: number;
  /** A file held still for the window, with content: hand it on. Called once per settled version. */
  onSettled: (file: SettledFile) => void;
  /** A file held still at 0 bytes: it is skipped and left where it is (not a failure). */
  onEmpty: (candidate: Candidate) => void;
  /** A pending file disappeared or stopped being a regular file; it is dropped. */
  onGone?: (path: string) => void;
  /**
   * Told about a stat that failed for another reason than "gone" (the file stays pending and is
   * tried again at the next tick) and about a callback that threw. Default: ignore.
   */
  onError?: (error: unknown, path: string) => void;
}

/** The reason the loop's sleep is cut short by add(); a fixed one spares a DOMException per wake. */
const WOKEN = new Error('a file became due earlier');

/** One pending file and the last version of it we saw. */
interface Entry {
  candidate: Candidate;
  size: number;
  mtimeMs: number;
  identity: FileIdentity | undefined;
  /** Fake-or-real clock time at which the current size/mtime was first seen. */
  since: number;
  /** When to look at it next: every interval while it changes, and exactly when its window ends. */
  nextCheckAt: number;
}

/**
 * A settle stat from an lstat: a symlink is "not a regular file", and a missing path (ENOENT, or
 * ENOTDIR: a parent folder was replaced by a file) is null.
 */
export function settleStatFrom(
  lstat: (path: string) => Promise<{ size: number; mtimeMs: number; birthtimeMs: number; isFile: boolean; ino: number; dev: number }>,
): SettleStatFunction {
  return async (path) => {
    try {
      const { size, mtimeMs, birthtimeMs, isFile, ino, dev } = await lstat(path);
      return { size, mtimeMs, birthtimeMs, isFile, identity: { ino, dev } };
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return null;
      throw error;
    }
  };
}

/** Default stat: fs lstat. */
export const lstatForSettle: SettleStatFunction = settleStatFrom(async (path) => {
  const stats = await lstat(path);
  return { size: stats.size, mtimeMs: stats.mtimeMs, birthtimeMs: stats.birthtimeMs, isFile: stats.isFile(), ino: stats.ino, dev: stats.dev };
});

/**
 * Holds candidates until they stop changing. Callbacks are called synchronously from `tick()`;
 * whatever they throw (or a promise they return rejects with) is caught and passed to `onError`,
 * because one faulty consumer must not stop the loop that settles every other file.
 */
export class Settler {
  readonly #clock: Clock;
  readonly #waitMs: number;
  readonly #intervalMs: number;
  readonly #stat: SettleStatFunction;
  readonly #concurrency: number;
  readonly #options: SettlerOptions;
  readonly #pending = new Map<string, Entry>();
  readonly #abort = new AbortController();
  #closed = false;
  #loop: Promise<void> | undefined;
  #tick: Promise<void> | undefined;
  /** Ends the loop's current sleep early; and when that sleep would end. */
  #wake: AbortController | undefined;
  #wakeAt = Number.POSITIVE_INFINITY;

  constructor(options: SettlerOptions) {
    if (!(options.waitMs >= 0)) throw new RangeError(`waitMs: expected a number >= 0, got ${options.waitMs}`);
    if (!(options.intervalMs > 0)) throw new RangeError(`intervalMs: expected a number > 0, got ${options.intervalMs}`);
    const concurrency = options.statConcurrency ?? 8;
    if (!(Number.isInteger(concurrency) && concurrency >= 1)) {
      throw new RangeError(`statConcurrency: expected an integer >= 1, got ${concurrency}`);
    }
    this.#options = options;
    this.#clock = options.clock;
    this.#waitMs = options.waitMs;
    this.#intervalMs = options.intervalMs;
    this.#stat = options.stat ?? lstatForSettle;
    this.#concurrency = concurrency;
  }

  /** How many files are waiting to settle. */
  get pendingCount(): number {
    return this.#pending.size;
  }

  /** Whether `path` is waiting to settle. */
  has(path: string): boolean {
    return this.#pending.has(path);
  }

  /**
   * Starts (or keeps) watching a candidate. The candidate's own size and mtime are the first
   * observation, so the window starts now. Adding a path that is already pending with the same
   * size and mtime changes nothing (events and rescans report the same file many times); with a
   * different size or mtime the window starts again. Ignored after `close()`.
   */
  add(candidate: Candidate): void {
    if (this.#closed) return;
    const existing = this.#pending.get(candidate.path);
    if (existing && existing.size === candidate.size && existing.mtimeMs === candidate.mtimeMs) return;
    const now = this.#clock.monotonic();
    const nextCheckAt = now + Math.min(this.#intervalMs, this.#waitMs);
    this.#pending.set(candidate.path, { candidate, size: candidate.size, mtimeMs: candidate.mtimeMs, identity: undefined, since: now, nextCheckAt });
    // A file that arrives complete is ready exactly when its window ends, not at the loop's next
    // regular wake-up: wake the loop if it sleeps past that moment.
    if (nextCheckAt < this.#wakeAt) this.#wake?.abort(WOKEN);
  }

  /** Stops watching a path (no callback). Returns whether it was pending. */
  delete(path: string): boolean {
    return this.#pending.delete(path);
  }

  /**
   * Starts the loop: sleep until the next file is due (at most `intervalMs`), tick, repeat until
   * `close()`. Calling it again does nothing.
   */
  start(): void {
    if (this.#loop || this.#closed) return;
    this.#loop = this.#run();
  }

  /**
   * Stats every pending file that is due (all of them when `all`, as a test may ask) and reports
   * those that settled, emptied or went away. A tick asked for while one is running joins it
   * rather than starting a second pass over the same files. Never rejects.
   */
  tick(): Promise<void> {
    this.#tick ??= this.#checkDue().finally(() => {
      this.#tick = undefined;
    });
    return this.#tick;
  }

  /** Stops the loop, waits for a tick in progress, and forgets all pending files. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#abort.abort();
    await this.#loop;
    await this.#tick;
    this.#pending.clear();
  }

  async #run(): Promise<void> {
    while (!this.#closed) {
      const now = this.#clock.monotonic();
      let due = now + this.#intervalMs;
      for (const entry of this.#pending.values()) due = Math.min(due, entry.nextCheckAt);
      this.#wake = new AbortController();
      this.#wakeAt = due;
      // One per tick, for as long as the daemon runs: released after each sleep (eitherSignal).
      const closedOrWoken = eitherSignal(this.#abort.signal, this.#wake.signal);
      try {
        await this.#clock.sleep(Math.max(0, due - now), closedOrWoken.signal);
      } catch {
        // Closed (the loop condition ends it), or woken early by add(): plan again.
        continue;
      } finally {
        closedOrWoken.release();
        this.#wakeAt = Number.POSITIVE_INFINITY;
      }
      if (this.#closed) break;
      await this.tick();
    }
  }

  async #checkDue(): Promise<void> {
    // A snapshot: callbacks may add or delete while we work.
    const now = this.#clock.monotonic();
    const queue = [...this.#pending.values()].filter((entry) => entry.nextCheckAt <= now);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < queue.length && !this.#closed) {
        const entry = queue[next++];
        if (entry) await this.#check(entry);
      }
    };
    const workers = Array.from({ length: Math.min(this.#concurrency, queue.length) }, () => worker());
    await Promise.all(workers);
  }

  async #check(entry: Entry): Promise<void> {
    const path = entry.candidate.path;
    let stat: SettleStat | null;
    try {
      stat = await this.#stat(path, entry.size);
    } catch (error) {
      // EACCES, EIO...: maybe passing; keep the file and try again after an interval.
      entry.nextCheckAt = this.#clock.monotonic() + this.#intervalMs;
      this.#report(error, path);
      return;
    }
    // While the stat was in flight the file may have been deleted from the settler, re-added with
    // a new version (add() then stores a new entry), or the settler closed: this answer is stale.
    if (this.#closed || this.#pending.get(path) !== entry) return;

    if (stat === null || !stat.isFile) {
      this.#pending.delete(path);
      this.#call(() => this.#options.onGone?.(path), path);
      return;
    }
    const now = this.#clock.monotonic();
    const replaced = stat.identity !== undefined && entry.identity !== undefined && !sameFile(stat.identity, entry.identity);
    if (stat.size !== entry.size || stat.mtimeMs !== entry.mtimeMs || replaced) {
      // Still being written (or touched, or another file put in its place): the window starts
      // again from this observation.
      entry.size = stat.size;
      entry.mtimeMs = stat.mtimeMs;
      entry.identity = stat.identity;
      entry.since = now;
      entry.nextCheckAt = now + this.#intervalMs;
      return;
    }
    entry.identity ??= stat.identity;
    if (now - entry.since < this.#waitMs) {
      // Unchanged so far: look again after an interval, or exactly when the window ends.
      entry.nextCheckAt = Math.min(now + this.#intervalMs, entry.since + this.#waitMs);
      return;
    }

    this.#pending.delete(path);
    const candidate: Candidate = { ...entry.candidate, size: stat.size, mtimeMs: stat.mtimeMs };
    if (stat.size === 0) {
      this.#call(() => this.#options.onEmpty(candidate), path);
      return;
    }
    // Some file systems (and older kernels) report no creation time as 0.
    const birthtimeMs = stat.birthtimeMs > 0 ? stat.birthtimeMs : stat.mtimeMs;
    this.#call(() => this.#options.onSettled({ ...candidate, birthtimeMs, ...(stat.identity ? { identity: stat.identity } : {}) }), path);
  }

  /** Runs a consumer callback so that nothing it throws or rejects reaches the loop. */
  #call(callback: () => unknown, path: string): void {
    try {
      const result = callback();
      // A consumer may hand us an async function; its rejection must not float unhandled.
      if (result instanceof Promise) result.catch((error: unknown) => this.#report(error, path));
    } catch (error) {
      this.#report(error, path);
    }
  }

  #report(error: unknown, path: string): void {
    try {
      this.#options.onError?.(error, path);
    } catch {
      // The error reporter itself failed; there is nobody left to tell.
    }
  }
}
