/**
 * What keeps a running uploader from its work right now (the server not answering, the archive's
 * disk away), kept in a small file of the state folder for `status` and `health` to read from
 * another process. The log says it once when it begins; this says whether it still lasts.
 */
import { rmSync } from 'node:fs';
import { uptime } from 'node:os';
import { join } from 'node:path';
import type { Clock } from './clock.js';
import { readStateFile, writeStateFile } from './state-file.js';

export const PROBLEMS_FILE = 'problems.json';

/**
 * - `server`: the server does not answer (or a proxy in front of it answers for it);
 * - `uploads`: the server fails the uploads of every file (its library's disk full, say);
 * - `archive-disk`: the disk that holds ARCHIVE_DIRECTORY is not mounted;
 * - `archive-full`: that disk refuses every file (full, or read-only).
 */
export type ProblemKind = 'server' | 'uploads' | 'archive-disk' | 'archive-full';

export interface Problem {
  kind: ProblemKind;
  /** The log line that said it began. */
  message: string;
  /** When it began (ISO 8601), to show. */
  since: string;
  /**
   * When it began, in seconds since the machine booted (`os.uptime()`): how long it lasts is
   * measured on that, which another process reads alike and the system's time setting does not
   * move (a Raspberry Pi sets its time at boot, hours or days forward).
   */
  sinceUptime: number;
}

/** How long `problem` has lasted, `now` and `nowUptime` being the times of the reader. */
export function lastedMs(problem: Problem, now: number, nowUptime: number): number {
  const byUptime = typeof problem.sinceUptime === 'number' && nowUptime >= problem.sinceUptime;
  return Math.max(0, byUptime ? (nowUptime - problem.sinceUptime) * 1000 : now - Date.parse(problem.since));
}

/**
 * The problems of this run. Written whole on every change only, never on a timer: a NAS's disk
 * may sleep while all is well.
 */
export class Problems {
  readonly #current = new Map<ProblemKind, Problem>();

  constructor(private readonly deps: { clock: Clock; directory: string; uptime?: () => number }) {
    this.#save();
  }

  /** It began, unless it already lasts (then it keeps its start). */
  raise(kind: ProblemKind, message: string): void {
    if (this.#current.has(kind)) return;
    const since = new Date(this.deps.clock.now()).toISOString();
    this.#current.set(kind, { kind, message, since, sinceUptime: (this.deps.uptime ?? uptime)() });
    this.#save();
  }

  /** It is over. */
  clear(kind: ProblemKind): void {
    if (this.#current.delete(kind)) this.#save();
  }

  /** At the end of the run: what it says would no longer be true. */
  close(): void {
    try {
      rmSync(join(this.deps.directory, PROBLEMS_FILE), { force: true });
    } catch {
      // Best effort, as the writes: a reader trusts the file only while an uploader runs.
    }
  }

  #save(): void {
    writeStateFile(this.deps.directory, PROBLEMS_FILE, { problems: [...this.#current.values()] });
  }
}

/** The running uploader's problems, as it last wrote them; empty when it wrote none. */
export function readProblems(directory: string): Problem[] {
  const value = readStateFile(directory, PROBLEMS_FILE) as { problems?: unknown } | undefined;
  return Array.isArray(value?.problems) ? (value.problems as Problem[]) : [];
}
