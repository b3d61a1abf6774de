import { existsSync, renameSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { Logger } from 'pino';
import { systemClock, type Clock } from '../support/clock.js';
import { messageOf } from '../support/message.js';
import { createPrivateFile, fixMode, preparePrivateDirectory, sqliteCode, unusable } from './lock.js';
import { migrate, newerSchemaError, SCHEMA_VERSION, schemaVersion } from './schema.js';
import {
  canTransition,
  FILE_STATES,
  FINAL_STATES,
  isFileState,
  isFinal,
  type FileState,
  type RecordDetails,
} from '../pipeline/states.js';
import { openDatabase, type Database, type Statement } from './sqlite.js';
import { JournalError } from './states.js';

export { JournalError, type JournalErrorKind } from './states.js';
export type { FileState, RecordDetails } from '../pipeline/states.js';

/**
 * The crash-safe journal: one SQLite file, `journal.db`, in the state directory. Each row is one
 * version (path, size, mtime) of a file and the state it reached; `transitions` keeps every step.
 *
 * A write-ahead record ("about to do X") commits before the caller does X: record() commits before
 * it returns, recordWriteAhead() before its promise resolves. After a crash the journal never
 * claims more than happened, and recovery looks at the disk (and the server's duplicate check) to
 * finish what was under way. Other transitions (recordLater) commit a moment later, in a batch.
 *
 * One process writes (see `lock.ts`; the daemon takes the lock before opening). Readers such as
 * `status` and `history` use `openReadOnly`, which WAL lets run beside the writer.
 */
export const JOURNAL_FILE = 'journal.db';

/** What SQLite keeps next to the database file; they travel with it. */
const COMPANIONS = ['-wal', '-shm', '-journal'] as const;

/** How long a statement waits for another connection's lock before SQLITE_BUSY. */
const BUSY_TIMEOUT_MS = 5_000;

/** How many matches `history` returns by default. */
const HISTORY_LIMIT = 50;

export interface JournalOptions {
  /** The state directory (the daemon passes STATE_DIRECTORY); created with mode 0700. */
  directory: string;
  logger: Logger;
  /** Time source for every timestamp. Default: the system clock. */
  clock?: Clock;
}

/** Where a file version is, as stored. Times are ms since the epoch. */
export interface FileRow {
  id: number;
  path: string;
  size: number;
  mtimeMs: number;
  /** SHA-1 (hex) once hashed. */
  checksum: string | null;
  state: FileState;
  /** The Immich asset id once the server has the file. */
  assetId: string | null;
  /** Whether our upload created the asset or the server already had it. */
  serverStatus: 'created' | 'duplicate' | null;
  archivePath: string | null;
  /** The last error (failed) or reason (skipped, gone). */
  error: string | null;
  /** How many times this version failed. */
  attempts: number;
  /** When a failed version may be tried again; null: only when it changes (or on `retry`). */
  nextRetryAt: number | null;
  createdAt: number;
  updatedAt: number;
}

/** The columns of a file version about which nothing is known yet (new, or changed on disk). */
const NOTHING_KNOWN = {
  checksum: null,
  assetId: null,
  serverStatus: null,
  archivePath: null,
  error: null,
  attempts: 0,
  nextRetryAt: null,
} as const satisfies Partial<FileRow>;

/**
 * How long a write-ahead record waits for others to share its commit (see recordWriteAhead).
 * `bench/journal.ts`: 185 µs of main thread per file committed on the next turn of the event
 * loop, 169 µs with 2 ms, 154 µs with 4 ms; 2,000 small files through the pipeline made about
 * 2,000 commits without a window and about 420 with 3 ms.
 */
export const WRITE_AHEAD_WINDOW_MS = 3;

/** How long recordLater() may hold a transition before committing it. */
export const LATER_MS = 200;

/**
 * One transition waiting to be committed: the file version, its new state, what came with it,
 * and who wants to know how it went (record() and recordWriteAhead() callers; a recordLater()
 * transition has nobody, so an illegal move found at commit time is logged).
 */
interface Transition {
  file: FileVersionRef;
  state: FileState;
  details: RecordDetails;
  waiter: Waiter | undefined;
}

interface Waiter {
  /** Called after the commit with the row id the transition landed on. */
  resolve: (id: number) => void;
  /** Called with the transition's own error (an illegal move) or the batch's (the commit failed). */
  reject: (error: unknown) => void;
}

/**
 * The newest row of one path as a batch is changing it, with what it still has to write: a batch
 * reads each path once, writes its row once and appends one history entry per transition.
 */
interface WorkingRow {
  row: FileRow;
  /** Whether `row.id` is in the table (else the row is INSERTed and gets its id then). */
  stored: boolean;
  /** Size or mtime differ from the stored row (the file changed): the UPDATE must set them. */
  versionChanged: boolean;
  /** History entries to append once the row is written. */
  steps: Array<[state: FileState, at: number, detail: string]>;
}

/** What one planned transition does to a path's newest row. */
interface Plan {
  /** Start a new row (the path is new, or its newest row is final). */
  insert: boolean;
  row: FileRow;
  versionChanged: boolean;
  steps: Array<[state: FileState, at: number, detail: string]>;
}

export interface FileVersionRef {
  path: string;
  size: number;
  mtimeMs: number;
}

export interface TransitionEntry {
  state: FileState;
  at: number;
  detail: Record<string, unknown>;
}

export interface FileHistory {
  file: FileRow;
  transitions: TransitionEntry[];
}

/** The columns of a FileRow, in the order `toFileRow` reads them from a raw (array) row. */
const COLUMNS =
  'id, path, size, mtime_ms, checksum, state, asset_id, server_status, archive_path, error, attempts, next_retry_at, created_at, updated_at';

/** A row as a raw statement returns it: arrays spare building a JS object per row twice. */
type RawRow = [
  id: number,
  path: string,
  size: number,
  mtimeMs: number,
  checksum: string | null,
  state: string,
  assetId: string | null,
  serverStatus: string | null,
  archivePath: string | null,
  error: string | null,
  attempts: number,
  nextRetryAt: number | null,
  createdAt: number,
  updatedAt: number,
];

/**
 * "In a final state" as SQL. An OR chain rather than `state IN (...)`: SQLite builds a temporary
 * table for an IN list on every run of the statement, which doubled the cost of findFinal. The
 * partial index files_final_updated_at (schema v3) has this very text as its WHERE.
 */
export const IS_FINAL = `(${FINAL_STATES.map((state) => `state = '${state}'`).join(' OR ')})`;

/** Newest row per path, as a subquery. */
const LATEST_IDS = 'SELECT MAX(id) FROM files GROUP BY path';

export class Journal {
  readonly #db: Database;
  readonly #clock: Clock;
  readonly #readOnly: boolean;
  readonly #sql: ReturnType<typeof prepare>;
  readonly #commitBatch: (batch: readonly Transition[]) => Array<WorkingRow | JournalError>;
  readonly #logger: Logger | undefined;
  /** Transitions recorded and not yet committed, in the order they were recorded. */
  #pending: Transition[] = [];
  /** Paths with a transition in #pending, so a read about one path flushes only when it must. */
  #pendingPaths = new Set<string>();
  #flushTimer: NodeJS.Timeout | undefined;
  /** A commit is scheduled WRITE_AHEAD_WINDOW_MS after the first write-ahead record that waits for it. */
  #commitSoon: NodeJS.Timeout | undefined;
  /** The last commit failed: said once, until one succeeds again. */
  #unwritable = false;

  private constructor(db: Database, clock: Clock, readOnly: boolean, logger?: Logger) {
    this.#db = db;
    this.#clock = clock;
    this.#readOnly = readOnly;
    this.#logger = logger;
    // history() ranks matches in JavaScript: SQLite's lower() folds ASCII only, and file names
    // are often not ASCII.
    db.function('iau_match_rank', { deterministic: true }, (path: unknown, archivePath: unknown, assetId: unknown, query: unknown) =>
      matchRank([path, archivePath].filter((name) => typeof name === 'string'), assetId, String(query)),
    );
    this.#sql = prepare(db);
    // IMMEDIATE: take the write lock first, so the rows we read cannot change before we write them.
    const batch = db.transaction((entries: readonly Transition[]) => this.#applyBatch(entries));
    this.#commitBatch = (entries) => batch.immediate(entries);
  }

  /**
   * Opens (creating or migrating) the journal in `directory` for writing. A journal from a newer
   * release is refused ('newer-schema', file untouched); a corrupt one is moved aside with a
   * warning and a new one started. The caller should hold the directory's lock (`acquireLock`).
   */
  static open(options: JournalOptions): Journal {
    const clock = options.clock ?? systemClock;
    preparePrivateDirectory(options.directory);
    const file = join(options.directory, JOURNAL_FILE);
    const db = openWritable(file, options.logger, clock);
    return new Journal(db, clock, false, options.logger);
  }

  /**
   * Opens an existing journal for reading only, beside a running daemon: nothing is migrated or
   * moved (SQLite may create the -shm/-wal files it needs to read a WAL journal, with the
   * journal's mode and owner). Returns undefined when there is no journal yet. Throws 'newer-schema' for a
   * newer file and 'unusable' for an older one (the daemon upgrades it at its next start).
   */
  static openReadOnly(directory: string, options: { clock?: Clock } = {}): Journal | undefined {
    const file = join(directory, JOURNAL_FILE);
    if (!existsSync(file)) return undefined;
    let db: Database;
    try {
      db = openDatabase(file, { readonly: true, fileMustExist: true, timeout: BUSY_TIMEOUT_MS });
    } catch (error) {
      throw unusableJournal(file, error);
    }
    let version: number;
    try {
      version = schemaVersion(db);
    } catch (error) {
      db.close();
      throw unusableJournal(file, error);
    }
    if (version === 0) {
      db.close(); // created but never written: as good as no journal
      return undefined;
    }
    if (version !== SCHEMA_VERSION) {
      db.close();
      if (version > SCHEMA_VERSION) throw newerSchemaError(file, version);
      throw new JournalError(
        'unusable',
        `The journal ${file} has schema version ${version}, older than this program's ${SCHEMA_VERSION}. ` +
          'Fix: start the daemon (watch or once) once; it upgrades the journal.',
      );
    }
    return new Journal(db, options.clock ?? systemClock, true);
  }

  /**
   * Records that `file` reached `state`, commits it with everything recorded before it, and
   * returns the row id: do the side effect only after this returns. For callers with nothing to
   * share a commit with (tests, tools); the daemon uses {@link recordWriteAhead} and
   * {@link recordLater}.
   *
   * Which row: the newest row for the path if it is not final (a different size or mtime
   * restarts it at 'discovered' first: the file changed); the newest row if it is 'failed' for
   * this very version and `state` is 'discovered' (a retry: attempts are kept); else a new row.
   * An illegal move throws an 'illegal-transition' JournalError and writes nothing (the
   * transitions recorded before it still commit).
   */
  record(file: FileVersionRef, state: FileState, details: RecordDetails = {}): number {
    const outcome: { id?: number; error?: unknown } = {};
    this.#enqueue(file, state, details, {
      resolve: (id) => (outcome.id = id),
      reject: (error) => (outcome.error = error),
    });
    this.flush();
    if (outcome.id === undefined) throw outcome.error;
    return outcome.id;
  }

  /**
   * Records a write-ahead transition ("about to link", "about to unlink"): resolves once it, and
   * everything recorded before it, has committed, so do the step only then. Write-ahead records
   * made within {@link WRITE_AHEAD_WINDOW_MS} of the first one share its commit (group commit):
   * at hundreds of files a second, a few files reaching `archiving` cost one transaction, for a
   * few milliseconds' wait each. Rejects with an 'illegal-transition' JournalError for an illegal
   * move, or with the commit's error, which then rejects every write-ahead record of that batch
   * and writes nothing of it.
   */
  recordWriteAhead(file: FileVersionRef, state: FileState, details: RecordDetails = {}): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#enqueue(file, state, details, { resolve: () => resolve(), reject });
      this.#commitSoon ??= setTimeout(() => {
        this.#commitSoon = undefined;
        this.#flushInBackground();
      }, WRITE_AHEAD_WINDOW_MS);
    });
  }

  /**
   * Records a transition that no side effect depends on (the file was seen, settled, hashed; the
   * server confirmed it): it commits with the next write-ahead record, or within
   * {@link LATER_MS}, or at flush()/close(). Most transitions of a file can wait, so a file costs
   * about one commit instead of seven; a crash loses at most the last fraction of a second of
   * them, which recovery tolerates (it decides from the disk and the server's duplicate check).
   * An illegal move found at commit time is logged, not thrown.
   */
  recordLater(file: FileVersionRef, state: FileState, details: RecordDetails = {}): void {
    this.#enqueue(file, state, details, undefined);
    this.#flushTimer ??= setTimeout(() => this.#flushInBackground(), LATER_MS).unref();
  }

  /**
   * Commits every transition recorded so far, in order, in one transaction. Reads call it first,
   * so they see every transition. Throws what the commit threw (after rejecting the write-ahead
   * records that waited for it).
   */
  flush(): void {
    if (this.#pending.length === 0) return;
    const batch = this.#takePending();
    let outcomes: Array<WorkingRow | JournalError>;
    try {
      outcomes = this.#commitBatch(batch);
    } catch (error) {
      const failure = writeFailure(error, this.#db.name);
      // Rolled back: none of the batch is written, so no waiter may act on it.
      for (const entry of batch) entry.waiter?.reject(failure);
      // Every file on its way fails with it, each in a line of its own; this says why, once.
      if (!this.#unwritable) {
        const said = failure instanceof JournalError ? failure.message : `cannot write the journal ${this.#db.name}: ${messageOf(failure)}`;
        this.#logger?.error(said);
      }
      this.#unwritable = true;
      throw failure;
    }
    if (this.#unwritable) {
      this.#unwritable = false;
      this.#logger?.info('the journal is written again');
    }
    batch.forEach((entry, i) => {
      const outcome = outcomes[i];
      if (outcome instanceof JournalError) {
        if (entry.waiter) entry.waiter.reject(outcome);
        // A bug guard; it did not cost the other transitions of the batch their commit.
        else this.#logger?.error({ file: entry.file.path, state: entry.state }, outcome.message);
      } else if (outcome) {
        entry.waiter?.resolve(outcome.row.id);
      }
    });
  }

  /** flush() from a timer or setImmediate, which have no caller to throw to. */
  #flushInBackground(): void {
    try {
      this.flush();
    } catch {
      // Said by flush(); write-ahead records of the batch were rejected, and the next record()
      // or read tries again.
    }
  }

  #enqueue(file: FileVersionRef, state: FileState, details: RecordDetails, waiter: Waiter | undefined): void {
    this.#assertWritable();
    if (!isFileState(state)) throw new JournalError('illegal-transition', `Unknown journal state ${String(state)} for ${file.path}`);
    if (!(Number.isFinite(file.size) && Number.isFinite(file.mtimeMs)) || file.path === '') {
      throw new TypeError(`recording a transition needs a path, a size and an mtime, got ${JSON.stringify(file)}`);
    }
    this.#pending.push({ file: { path: file.path, size: file.size, mtimeMs: file.mtimeMs }, state, details, waiter });
    this.#pendingPaths.add(file.path);
  }

  #takePending(): Transition[] {
    clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    clearTimeout(this.#commitSoon);
    this.#commitSoon = undefined;
    const pending = this.#pending;
    this.#pending = [];
    this.#pendingPaths.clear();
    return pending;
  }

  /**
   * The newest row for exactly this version in a final state, if any. Keep mode uses it to pass
   * over unchanged files without hashing or asking the server; the caller decides what each final
   * state means (a 'gone' or 'failed' version is not done).
   */
  findFinal(path: string, size: number, mtimeMs: number): FileRow | undefined {
    // Asked for every file a scan sees: flush only when this path has something waiting.
    if (this.#pendingPaths.has(path)) this.flush();
    const raw = this.#sql.findFinal.get(path, size, mtimeMs) as RawRow | undefined;
    return raw && toFileRow(raw);
  }

  /** The newest row for a path, whatever its state. */
  current(path: string): FileRow | undefined {
    if (this.#pendingPaths.has(path)) this.flush();
    const raw = this.#sql.latestForPath.get(path) as RawRow | undefined;
    return raw && toFileRow(raw);
  }

  /**
   * The newest row of `base` and of each path that is `base.` followed by more (`photo.jpg`,
   * `photo.mov` for `photo`), most recently updated first, at most 100: the files a sidecar named
   * `<base>.xmp` may belong to (late-sidecars.ts).
   */
  latestWithStem(base: string): FileRow[] {
    this.flush();
    // The paths that start with `base.` are those in [`base.`, `base/`): '/' follows '.'.
    return this.#rows(this.#sql.latestWithStem, base, `${base}.`, `${base}/`);
  }

  /** Rows not in a final state, oldest first: what a crash interrupted. */
  unfinished(): FileRow[] {
    this.flush();
    return this.#rows(this.#sql.unfinished);
  }

  /** For each path whose newest row is 'failed', that row; oldest first. */
  failed(): FileRow[] {
    this.flush();
    return this.#rows(this.#sql.failed);
  }

  /** Makes every failed file due for a retry at `now` (the `retry` command); returns how many. */
  makeFailedEligible(now: number = this.#clock.now()): number {
    this.#assertWritable();
    this.flush();
    return this.#sql.makeFailedEligible.run(now).changes;
  }

  /** How many paths are in each state, counting only each path's newest row. */
  counts(): Record<FileState, number> {
    this.flush();
    const counts = Object.fromEntries(FILE_STATES.map((state) => [state, 0])) as Record<FileState, number>;
    for (const { state, n } of this.#sql.counts.all() as Array<{ state: string; n: number }>) {
      if (isFileState(state)) counts[state] = n;
    }
    return counts;
  }

  /** The latest outcomes (rows in a final state), newest first. */
  recent(limit: number): FileRow[] {
    this.flush();
    return this.#rows(this.#sql.recent, Math.max(0, Math.floor(limit)));
  }

  /**
   * Files our uploads created on the server (not server duplicates), counted when they reached
   * 'on-server' at or after `sinceMs` (all time by default), and their bytes.
   */
  totals(sinceMs?: number): { files: number; bytes: number } {
    this.flush();
    const row = this.#sql.totals.get(sinceMs ?? Number.MIN_SAFE_INTEGER) as { files: number; bytes: number };
    return { files: row.files, bytes: row.bytes };
  }

  /**
   * Rows whose path, archive path or asset id is `query`, whose file name (in the watch folder or
   * the archive) is `query`, or whose path or archive path contains it (ignoring case), in that
   * order of closeness and newest first within each; at most `limit`.
   */
  history(query: string, limit: number = HISTORY_LIMIT): FileHistory[] {
    this.flush();
    const wanted = query.trim();
    if (wanted === '') return [];
    const rows = this.#rows(this.#sql.history, { query: wanted, limit: Math.max(0, Math.floor(limit)) });
    return rows.map((file) => ({ file, transitions: this.transitions(file.id) }));
  }

  /** The transitions of one file version (a row's `id`), oldest first. */
  transitions(fileId: number): TransitionEntry[] {
    this.flush();
    return toTransitions(this.#sql.transitionsOf.all(fileId));
  }

  /** The transitions of every row of a file version (path, size, mtime), oldest first. */
  versionTransitions(path: string, size: number, mtimeMs: number): TransitionEntry[] {
    if (this.#pendingPaths.has(path)) this.flush();
    return toTransitions(this.#sql.versionTransitions.all(path, size, mtimeMs));
  }

  /** Closes the database; a writer checkpoints its WAL first. Calling it again does nothing. */
  close(): void {
    if (this.#db.open) {
      this.flush();
      this.#db.close();
    }
  }

  /**
   * Applies a batch inside its transaction. Each path's newest row is read once and written once
   * (with one history entry per transition), however many transitions it had in the batch. Each
   * transition is planned in memory before anything changes, so an illegal one leaves no trace
   * and the others still commit. Returns, per transition, the row it landed on or its error.
   */
  #applyBatch(entries: readonly Transition[]): Array<WorkingRow | JournalError> {
    const working = new Map<string, WorkingRow | undefined>();
    const outcomes: Array<WorkingRow | JournalError> = [];
    for (const { file, state, details } of entries) {
      let current = working.get(file.path);
      if (current === undefined && !working.has(file.path)) {
        const raw = this.#sql.latestForPath.get(file.path) as RawRow | undefined;
        current = raw && { row: toFileRow(raw), stored: true, versionChanged: false, steps: [] };
        working.set(file.path, current);
      }
      let plan: Plan;
      try {
        plan = planTransition(current?.row, file, state, details, this.#clock.now());
      } catch (error) {
        if (!(error instanceof JournalError)) throw error;
        outcomes.push(error);
        continue;
      }
      if (plan.insert || !current) {
        // A new row: the path's previous row is written first, so ids keep the order of events.
        if (current) this.#write(current);
        current = { row: plan.row, stored: false, versionChanged: false, steps: plan.steps };
        working.set(file.path, current);
      } else {
        current.row = plan.row;
        current.versionChanged ||= plan.versionChanged;
        current.steps.push(...plan.steps);
      }
      outcomes.push(current);
    }
    for (const row of working.values()) if (row) this.#write(row);
    return outcomes;
  }

  /** Writes a working row (INSERT or UPDATE) and appends its history entries. */
  #write(working: WorkingRow): void {
    if (working.steps.length === 0) return;
    const { row } = working;
    if (!working.stored) {
      row.id = Number(
        this.#sql.insert.run(row.path, row.size, row.mtimeMs, ...mutableColumns(row), row.createdAt).lastInsertRowid,
      );
      working.stored = true;
    } else if (working.versionChanged) {
      this.#sql.updateVersion.run(row.size, row.mtimeMs, ...mutableColumns(row), row.id);
    } else {
      // Size and mtime are left out of the SET: SQLite then leaves files_version alone.
      this.#sql.update.run(...mutableColumns(row), row.id);
    }
    for (const [state, at, detail] of working.steps) this.#sql.insertTransition.run(row.id, state, at, detail);
    working.steps = [];
    working.versionChanged = false;
  }

  #rows(statement: Statement, ...params: unknown[]): FileRow[] {
    return (statement.all(...params) as RawRow[]).map(toFileRow);
  }

  #assertWritable(): void {
    if (this.#readOnly) throw new JournalError('unusable', 'This journal was opened read-only (openReadOnly); it cannot record.');
  }
}

/**
 * What recording `state` for `file` does to the path's newest row `current`, computed without
 * touching the database; throws an 'illegal-transition' JournalError for a move the state machine
 * forbids.
 *
 * Which row: the newest row for the path if it is not final (a different size or mtime restarts
 * it at 'discovered' first: the file changed); the newest row if it is 'failed' for this very
 * version and `state` is 'discovered' (a retry: attempts are kept); else a new row.
 */
function planTransition(current: FileRow | undefined, file: FileVersionRef, state: FileState, details: RecordDetails, now: number): Plan {
  if (current && !isFinal(current.state)) {
    if (sameVersion(current, file)) {
      const [row, step] = transition(current, state, details, now);
      return { insert: false, row, versionChanged: false, steps: [step] };
    }
    // The file changed while we worked on it: everything learned about the old content is void.
    const fresh: FileRow = { ...current, size: file.size, mtimeMs: file.mtimeMs, ...NOTHING_KNOWN };
    const note = { restart: 'file changed', previous: { size: current.size, mtimeMs: current.mtimeMs } };
    const [restarted, restart] = transition(fresh, 'discovered', state === 'discovered' ? details : {}, now, note);
    if (state === 'discovered') return { insert: false, row: restarted, versionChanged: true, steps: [restart] };
    const [row, step] = transition(restarted, state, details, now);
    return { insert: false, row, versionChanged: true, steps: [restart, step] };
  }
  // A failed file tried again, or found no longer there, goes on in its own row.
  if (current?.state === 'failed' && (state === 'discovered' || state === 'gone') && sameVersion(current, file)) {
    const [row, step] = transition(current, state, details, now);
    return { insert: false, row, versionChanged: false, steps: [step] };
  }
  const empty: FileRow = {
    id: 0,
    path: file.path,
    size: file.size,
    mtimeMs: file.mtimeMs,
    state,
    ...NOTHING_KNOWN,
    createdAt: now,
    updatedAt: now,
  };
  const row: FileRow = { ...empty, ...columnsAfter(empty, state, details) };
  return { insert: true, row, versionChanged: false, steps: [[state, now, detailJson(null, details, {})]] };
}

/** One validated move of a row to `to`: the row after it and its history entry. */
function transition(
  row: FileRow,
  to: FileState,
  details: RecordDetails,
  now: number,
  note: Record<string, unknown> = {},
): [FileRow, [state: FileState, at: number, detail: string]] {
  if (!canTransition(row.state, to)) {
    throw new JournalError(
      'illegal-transition',
      `Illegal journal transition ${row.state} -> ${to} for ${row.path} (row ${row.id}). ` +
        'This is a bug in immich-auto-uploader; please report it.',
    );
  }
  return [{ ...row, ...columnsAfter(row, to, details), state: to, updatedAt: now }, [to, now, detailJson(row.state, details, note)]];
}

/** Opens, checks, configures and migrates the journal, moving a damaged file aside once. */
function openWritable(file: string, logger: Logger, clock: Clock): Database {
  for (let attempt = 1; ; attempt++) {
    try {
      // Created empty with 0600 first: SQLite would create it 0644 and give its -wal and -shm
      // the same mode. An empty file is a valid, empty database.
      createPrivateFile(file);
    } catch (error) {
      throw unusableJournal(file, error);
    }
    const damage = inspect(file);
    if (damage && attempt === 1) {
      moveAside(file, damage, logger, clock);
      continue;
    }
    let db: Database;
    try {
      db = openDatabase(file, { timeout: BUSY_TIMEOUT_MS });
    } catch (error) {
      throw unusableJournal(file, error);
    }
    try {
      // Again on this connection, before configure() writes: the file may have changed since.
      const version = schemaVersion(db);
      if (version > SCHEMA_VERSION) throw newerSchemaError(file, version);
      configure(db);
      const applied = migrate(db, file);
      if (applied.length > 0 && version > 0) {
        logger.info({ file, from: version, to: SCHEMA_VERSION }, `Upgraded the journal ${file} from schema version ${version} to ${SCHEMA_VERSION}`);
      }
    } catch (error) {
      db.close();
      if (error instanceof JournalError) throw error;
      if (attempt === 1 && isCorruption(error)) {
        moveAside(file, error, logger, clock);
        continue;
      }
      throw unusableJournal(file, error);
    }
    for (const path of [file, `${file}-wal`, `${file}-shm`]) fixMode(path, 0o600);
    return db;
  }
}

/**
 * Looks at the journal through a read-only connection, which can neither roll back, checkpoint
 * nor delete anything, so a newer or damaged file stays exactly as found. Throws 'newer-schema';
 * returns the damage found, if any. Other trouble (permissions, ...) is left for the writable
 * open to report.
 */
function inspect(file: string): Error | undefined {
  let db: Database;
  try {
    db = openDatabase(file, { readonly: true, fileMustExist: true, timeout: BUSY_TIMEOUT_MS });
  } catch (error) {
    return isCorruption(error) ? (error as Error) : undefined;
  }
  try {
    const version = schemaVersion(db);
    if (version > SCHEMA_VERSION) throw newerSchemaError(file, version);
    const problems = (db.pragma('quick_check') as Array<{ quick_check: string }>).map((row) => row.quick_check);
    if (problems.length !== 1 || problems[0] !== 'ok') return new CorruptJournal(problems.slice(0, 5).join('; '));
    return undefined;
  } catch (error) {
    if (error instanceof JournalError) throw error;
    return isCorruption(error) ? (error as Error) : undefined;
  } finally {
    db.close();
  }
}

function configure(db: Database): void {
  db.pragma('journal_mode = WAL');
  // Durability: with WAL, synchronous=NORMAL syncs at checkpoints, not at every commit. A commit
  // survives a crash or kill -9 of this process (it is in the WAL file, which the OS keeps); after
  // a power cut or kernel crash the last few transitions may be lost. Recovery tolerates that:
  // it trusts the disk (a file still in the watch folder is processed again, and the server's
  // duplicate check stops a second upload), so losing a recent "archived" costs one check, not a
  // picture. FULL would cost an fsync per transition (milliseconds instead of ~30 µs).
  db.pragma('synchronous = NORMAL');
  db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
  db.pragma('foreign_keys = ON');
}

function toTransitions(rows: unknown[]): TransitionEntry[] {
  return (rows as Array<{ state: string; at: number; detail: string }>).map((entry) => ({
    state: entry.state as FileState,
    at: entry.at,
    detail: parseDetail(entry.detail),
  }));
}

/** quick_check found damage; treated like SQLITE_CORRUPT. */
class CorruptJournal extends Error {
  override readonly name = 'CorruptJournal';
}

function isCorruption(error: unknown): boolean {
  if (error instanceof CorruptJournal) return true;
  const code = sqliteCode(error);
  return code !== undefined && (code === 'SQLITE_NOTADB' || code.startsWith('SQLITE_CORRUPT'));
}

/** Renames the journal and its companions to `journal.db.corrupt-<time>` so a new one can start. */
function moveAside(file: string, cause: unknown, logger: Logger, clock: Clock): void {
  // ISO time with '-' for ':', which some file systems (SMB, exFAT) do not allow in names.
  const stamp = new Date(clock.now()).toISOString().replaceAll(':', '-');
  let target = `${file}.corrupt-${stamp}`;
  for (let n = 2; existsSync(target); n++) target = `${file}.corrupt-${stamp}-${n}`;
  try {
    renameSync(file, target);
    for (const suffix of COMPANIONS) {
      // A stale WAL next to a new database would be replayed into it: it must go too.
      if (existsSync(`${file}${suffix}`)) renameSync(`${file}${suffix}`, `${target}${suffix}`);
    }
  } catch (error) {
    throw unusableJournal(file, error);
  }
  const reason = cause instanceof Error ? cause.message : String(cause);
  logger.warn(
    { file, movedTo: target, reason },
    `The journal ${file} is damaged (${reason}); it was moved to ${target} and a new journal started. ` +
      "Files already on the server are not uploaded again: the server's duplicate check still recognises them.",
  );
}

/**
 * An 'unusable' JournalError about the journal file `file` (lock.ts, unusable()); a damaged one
 * (the commands that only read it) is not the folder's fault, and the next run repairs it.
 */
function unusableJournal(file: string, cause: unknown): JournalError {
  if (!isCorruption(cause)) return unusable(`the journal ${file}`, cause);
  return new JournalError(
    'unusable',
    `Cannot read the journal ${file}: it is damaged (${messageOf(cause)}). The next \`once\` or \`watch\` moves it aside and starts a new one; ` +
      "files already on the server are not uploaded again, as the server's duplicate check recognises them.",
    { cause },
  );
}

/** The stored columns after moving `row` to `to` with `details`. */
function columnsAfter(row: FileRow, to: FileState, details: RecordDetails): Partial<FileRow> {
  // Kept with a reason: left in place, as its folder cannot be written to.
  const explains = to === 'failed' || to === 'skipped' || to === 'gone' || to === 'kept';
  return {
    checksum: details.checksum ?? row.checksum,
    assetId: details.assetId ?? row.assetId,
    // Uploaded by us, then found on the server at a retry (its archive had failed): still ours.
    serverStatus: row.serverStatus === 'created' && (details.assetId ?? row.assetId) === row.assetId ? 'created' : (details.serverStatus ?? row.serverStatus),
    // Kept after `archiving`: its folder could not be written to, and nothing is in the archive.
    archivePath: to === 'kept' ? null : (details.archivePath ?? row.archivePath),
    error: details.error ?? (explains ? (details.reason ?? null) : null),
    attempts: to === 'failed' ? row.attempts + 1 : row.attempts,
    nextRetryAt: to === 'failed' ? (details.nextRetryAt ?? null) : null,
  };
}

function detailJson(from: FileState | null, details: RecordDetails, note: Record<string, unknown>): string {
  const defined = Object.fromEntries(Object.entries(details).filter(([, value]) => value !== undefined));
  return JSON.stringify({ from, ...defined, ...note });
}

function parseDetail(text: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(text);
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : { value };
  } catch {
    return { raw: text };
  }
}

function sameVersion(row: FileRow, file: FileVersionRef): boolean {
  return row.size === file.size && row.mtimeMs === file.mtimeMs;
}

/**
 * How closely a row matches what `history` was asked: 0 its path, archive path or asset id (as
 * Immich's web page of the photo shows it), 1 the file name of either path, 2 part of either path
 * (ignoring case); null: not at all.
 */
function matchRank(paths: readonly string[], assetId: unknown, query: string): number | null {
  if (paths.includes(query) || assetId === query) return 0;
  const foldedQuery = fold(query);
  if (paths.some((path) => fold(basename(path)) === foldedQuery)) return 1;
  return paths.some((path) => fold(path).includes(foldedQuery)) ? 2 : null;
}

function fold(text: string): string {
  return text.normalize('NFC').toLowerCase();
}

function toFileRow(raw: RawRow): FileRow {
  const [id, path, size, mtimeMs, checksum, state, assetId, serverStatus, archivePath, error, attempts, nextRetryAt, createdAt, updatedAt] =
    raw;
  return {
    id,
    path,
    size,
    mtimeMs,
    checksum,
    state: state as FileState,
    assetId,
    serverStatus: serverStatus === 'created' || serverStatus === 'duplicate' ? serverStatus : null,
    archivePath,
    error,
    attempts,
    nextRetryAt,
    createdAt,
    updatedAt,
  };
}

/** The columns a transition may change, in the order the insert and update statements take them. */
function mutableColumns(row: FileRow): [string | null, FileState, string | null, string | null, string | null, string | null, number, number | null, number] {
  return [row.checksum, row.state, row.assetId, row.serverStatus, row.archivePath, row.error, row.attempts, row.nextRetryAt, row.updatedAt];
}

/** The columns of mutableColumns(), and as many parameter slots. */
const MUTABLE = 'checksum, state, asset_id, server_status, archive_path, error, attempts, next_retry_at, updated_at';
const MUTABLE_SLOTS = MUTABLE.split(',').map(() => '?').join(', ');

/**
 * Every statement, prepared once: a prepared lookup through an index costs a few microseconds.
 *
 * The lookups by one file bind their values as `CAST(? AS type)` rather than a bare `?`: SQLite 3.54
 * (better-sqlite3 13, Node 24) re-prepares a statement with `ORDER BY` at every new value of a bare
 * parameter in its WHERE. A path's newest row took 11.6 µs that way and 2.0 µs with the cast, a
 * version's newest final row 23 µs and 2.1 µs (2.3-2.5 µs either way with better-sqlite3 12), a
 * file's transitions (history) 9.6 µs and 3.1 µs. The casts are to each column's own type, so they
 * change no result.
 */
function prepare(db: Database) {
  const notSuperseded = 'NOT EXISTS (SELECT 1 FROM files newer WHERE newer.path = files.path AND newer.id > files.id)';
  return {
    latestForPath: db.prepare(`SELECT ${COLUMNS} FROM files WHERE path = CAST(? AS TEXT) ORDER BY id DESC LIMIT 1`).raw(true),
    findFinal: db.prepare(
      `SELECT ${COLUMNS} FROM files
       WHERE path = CAST(? AS TEXT) AND size = CAST(? AS INTEGER) AND mtime_ms = CAST(? AS REAL) AND ${IS_FINAL}
       ORDER BY id DESC LIMIT 1`,
    ).raw(true),
    insert: db.prepare(
      `INSERT INTO files (path, size, mtime_ms, ${MUTABLE}, created_at) VALUES (?, ?, ?, ${MUTABLE_SLOTS}, ?)`,
    ),
    update: db.prepare(`UPDATE files SET (${MUTABLE}) = (${MUTABLE_SLOTS}) WHERE id = ?`),
    updateVersion: db.prepare(`UPDATE files SET (size, mtime_ms, ${MUTABLE}) = (?, ?, ${MUTABLE_SLOTS}) WHERE id = ?`),
    insertTransition: db.prepare('INSERT INTO transitions (file_id, state, at, detail) VALUES (?, ?, ?, ?)'),
    transitionsOf: db.prepare('SELECT state, at, detail FROM transitions WHERE file_id = CAST(? AS INTEGER) ORDER BY id'),
    versionTransitions: db.prepare(
      `SELECT t.state, t.at, t.detail FROM transitions t JOIN files f ON f.id = t.file_id
       WHERE f.path = CAST(? AS TEXT) AND f.size = CAST(? AS INTEGER) AND f.mtime_ms = CAST(? AS REAL)
       ORDER BY t.id`,
    ),
    latestWithStem: db
      .prepare(
        `SELECT ${COLUMNS} FROM files
         WHERE (path = CAST(? AS TEXT) OR (path >= CAST(? AS TEXT) AND path < CAST(? AS TEXT))) AND ${notSuperseded}
         ORDER BY updated_at DESC, id DESC LIMIT 100`,
      )
      .raw(true),
    unfinished: db.prepare(`SELECT ${COLUMNS} FROM files WHERE NOT ${IS_FINAL} ORDER BY id`).raw(true),
    failed: db.prepare(`SELECT ${COLUMNS} FROM files WHERE state = 'failed' AND ${notSuperseded} ORDER BY id`).raw(true),
    makeFailedEligible: db.prepare(`UPDATE files SET next_retry_at = ? WHERE state = 'failed' AND ${notSuperseded}`),
    counts: db.prepare(`SELECT state, COUNT(*) AS n FROM files WHERE id IN (${LATEST_IDS}) GROUP BY state`),
    recent: db
      // Walks files_final_updated_at, a partial index whose WHERE is exactly IS_FINAL (schema v3),
      // from the newest end and stops after `limit` rows.
      .prepare(`SELECT ${COLUMNS} FROM files WHERE ${IS_FINAL} ORDER BY updated_at DESC, id DESC LIMIT ?`)
      .raw(true),
    totals: db.prepare(
      `SELECT COUNT(*) AS files, COALESCE(SUM(size), 0) AS bytes FROM files
       WHERE server_status = 'created'
         AND EXISTS (SELECT 1 FROM transitions t WHERE t.file_id = files.id AND t.state = 'on-server' AND t.at >= ?)`,
    ),
    history: db.prepare(
      `SELECT ${COLUMNS} FROM (SELECT *, iau_match_rank(path, archive_path, asset_id, @query) AS rank FROM files) WHERE rank IS NOT NULL
       ORDER BY rank, updated_at DESC, id DESC LIMIT @limit`,
    ).raw(true),
  };
}

/** SQLite's codes for a commit the disk refused: full, failing, read-only. */
const UNWRITABLE_CODES = /^SQLITE_(FULL|IOERR|READONLY)/;

/**
 * A failed commit as the user needs it: SQLite's words with the journal's file and what to do,
 * when the disk refused the write; anything else (a bug) as it was.
 */
export function writeFailure(error: unknown, file: string): unknown {
  const code = sqliteCode(error);
  if (code === undefined || !UNWRITABLE_CODES.test(code)) return error;
  const fix = code === 'SQLITE_FULL' ? 'free space on its disk' : 'check its disk (full, failing or read-only)';
  return new JournalError(
    'unwritable',
    `cannot write the journal ${file}: ${messageOf(error)} (${code}). Fix: ${fix}, or point STATE_DIRECTORY elsewhere; ` +
      'files stay where they are and are tried again',
    { cause: error },
  );
}
