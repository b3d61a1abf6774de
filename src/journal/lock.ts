import { accessSync, chmodSync, constants, existsSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { messageOf } from '../support/message.js';
import { makeFoldersSync } from '../support/paths.js';
import { openDatabase, type Database } from './sqlite.js';
import { JournalError } from './states.js';

/**
 * One process writes a state directory. The lock is a kernel file lock, not a pid file: a pid
 * file left by a killed process would need a liveness check, and in Docker the restarted process
 * is pid 1 again, exactly like the dead one. A kernel lock dies with its process (kill -9, OOM,
 * power cut), so a stale lock can never block a restart.
 *
 * The lock is a small SQLite file, `instance.lock`, held with `PRAGMA locking_mode=EXCLUSIVE`
 * after one write transaction: the connection keeps its EXCLUSIVE lock until it is closed.
 * SQLite's unix VFS also tracks locks within one process, so a second acquire in the same
 * process is refused too. Like the journal's WAL, this needs a local file system; fcntl locks on
 * network shares are unreliable.
 *
 * `instance.json` beside it records who holds the lock, only so that a refusal can say so.
 */
export const LOCK_FILE = 'instance.lock';
export const OWNER_FILE = 'instance.json';

/** How long an acquire waits: long enough to ride out an `isLocked` probe, short enough to fail fast. */
const ACQUIRE_WAIT_MS = 250;

export interface InstanceLock {
  readonly directory: string;
  /** Frees the lock; calling it again does nothing. */
  release(): void;
}

interface Owner {
  pid: number;
  startedAt: string;
  hostname: string;
}

/**
 * Takes the state directory for this process, creating the directory (mode 0700) if needed.
 * Throws a 'locked' JournalError naming the holder when another live process has it.
 */
export function acquireLock(directory: string): InstanceLock {
  preparePrivateDirectory(directory);
  const file = join(directory, LOCK_FILE);
  let db: Database;
  try {
    createPrivateFile(file);
    db = openDatabase(file, { timeout: ACQUIRE_WAIT_MS });
  } catch (error) {
    throw unusable(`STATE_DIRECTORY ${directory}`, error);
  }
  try {
    db.pragma('locking_mode = EXCLUSIVE');
    // A write is what makes SQLite take, and in EXCLUSIVE mode keep, the EXCLUSIVE lock.
    db.exec(
      'BEGIN EXCLUSIVE; CREATE TABLE IF NOT EXISTS holder (pid INTEGER); DELETE FROM holder; ' +
        `INSERT INTO holder (pid) VALUES (${process.pid}); COMMIT;`,
    );
  } catch (error) {
    db.close();
    if (sqliteCode(error) === 'SQLITE_BUSY') throw lockedError(directory);
    throw unusable(`STATE_DIRECTORY ${directory}`, error);
  }
  fixMode(file, 0o600);
  writeOwner(directory, { pid: process.pid, startedAt: new Date().toISOString(), hostname: hostname() });

  let released = false;
  return {
    directory,
    release: () => {
      if (released) return;
      released = true;
      // Remove our note before letting go: afterwards it could already be the next holder's.
      try {
        rmSync(join(directory, OWNER_FILE), { force: true });
      } finally {
        db.close();
      }
    },
  };
}

/**
 * Whether a live process holds the state directory's lock right now. It is a snapshot: the holder
 * may stop a moment later. Never takes the lock itself for longer than one probe.
 */
export function isLocked(directory: string): boolean {
  if (!stateFolderReadable(directory)) return false; // nobody ever used it
  let db: Database;
  try {
    db = openDatabase(join(directory, LOCK_FILE), { fileMustExist: true, timeout: 0 });
  } catch (error) {
    if (error instanceof JournalError) throw error; // SQLite itself cannot be loaded
    if (!existsSync(join(directory, LOCK_FILE))) return false; // nobody ever held it here
    throw unusable(`STATE_DIRECTORY ${directory}`, error);
  }
  try {
    // Reading needs a SHARED lock, which a holder's EXCLUSIVE lock refuses at once.
    db.prepare('SELECT 1 FROM sqlite_master LIMIT 1').get();
    return false;
  } catch (error) {
    if (sqliteCode(error) === 'SQLITE_BUSY') return true;
    throw unusable(`STATE_DIRECTORY ${directory}`, error);
  } finally {
    db.close();
  }
}

/**
 * Whether the state folder exists; throws when it cannot be read. A folder of another user's
 * (the uploader runs as `pi`, the command as someone else) would otherwise look empty: "no
 * journal yet", "no uploader running", while one runs.
 */
export function stateFolderReadable(directory: string): boolean {
  try {
    accessSync(directory, constants.R_OK | constants.X_OK);
    return true;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return false;
    throw new JournalError(
      'unusable',
      `Cannot read STATE_DIRECTORY ${directory}: ${code === 'EACCES' || code === 'EPERM' ? 'permission denied' : messageOf(error)}. ` +
        'Fix: run this command as the user the uploader runs as (sudo -u <that user> ...), or point STATE_DIRECTORY at its state folder.',
      { cause: error },
    );
  }
}

/**
 * Creates the state directory private to its owner (0700), or tightens an existing one. A shared
 * sticky directory such as /tmp is never changed: it is not ours to close. A chmod the file
 * system refuses (not our directory, read-only mount) is not fatal; the files inside are still
 * created 0600.
 */
export function preparePrivateDirectory(directory: string): void {
  try {
    makeFoldersSync(directory, 0o700);
  } catch (error) {
    throw unusable(`STATE_DIRECTORY ${directory}`, error);
  }
  let stats;
  try {
    stats = statSync(directory);
  } catch (error) {
    throw unusable(`STATE_DIRECTORY ${directory}`, error);
  }
  if (!stats.isDirectory()) {
    throw new JournalError('unusable', `STATE_DIRECTORY ${directory} is not a directory. Fix: point STATE_DIRECTORY at a directory.`);
  }
  if ((stats.mode & 0o1000) !== 0) return;
  fixMode(directory, 0o700);
}

/** Creates `file` with mode 0600 if it does not exist, so it is never readable by others, even briefly. */
export function createPrivateFile(file: string): void {
  try {
    writeFileSync(file, '', { flag: 'wx', mode: 0o600 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
}

/** Sets a mode when it differs; a refusal (EPERM on a file we do not own) or a missing file is ignored. */
export function fixMode(path: string, mode: number): void {
  try {
    if ((statSync(path).mode & 0o7777) !== mode) chmodSync(path, mode);
  } catch {
    // Best effort by design: see preparePrivateDirectory.
  }
}

function writeOwner(directory: string, owner: Owner): void {
  const file = join(directory, OWNER_FILE);
  const temporary = `${file}.${process.pid}.tmp`;
  try {
    writeFileSync(temporary, `${JSON.stringify(owner)}\n`, { mode: 0o600 });
    renameSync(temporary, file);
  } catch {
    // The note only improves a refusal message; the lock itself is already held.
    rmSync(temporary, { force: true });
  }
}

function readOwner(directory: string): Owner | undefined {
  try {
    const parsed = JSON.parse(readFileSync(join(directory, OWNER_FILE), 'utf8')) as Partial<Owner>;
    if (typeof parsed.pid !== 'number' || typeof parsed.startedAt !== 'string') return undefined;
    return { pid: parsed.pid, startedAt: parsed.startedAt, hostname: typeof parsed.hostname === 'string' ? parsed.hostname : '' };
  } catch {
    return undefined;
  }
}

function lockedError(directory: string): JournalError {
  const owner = readOwner(directory);
  let who = 'pid unknown, started at an unknown time';
  if (owner) {
    const where = owner.hostname && owner.hostname !== hostname() ? ` on ${owner.hostname}` : '';
    who = `pid ${owner.pid}${where}, started ${owner.startedAt}`;
  }
  return new JournalError(
    'locked',
    `another immich-auto-uploader (${who}) is already running with STATE_DIRECTORY ${directory}; ` +
      'stop it first, or give this one its own STATE_DIRECTORY',
  );
}

/**
 * An 'unusable' JournalError about `subject` (the state directory, the journal file), saying how to
 * fix it. A JournalError passes through: it already says what is wrong and its own fix (SQLite
 * that cannot be loaded).
 */
export function unusable(subject: string, cause: unknown): JournalError {
  if (cause instanceof JournalError) return cause;
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new JournalError(
    'unusable',
    `Cannot use ${subject}: ${reason}. Fix: make STATE_DIRECTORY a writable directory on a local disk for this user.`,
    { cause },
  );
}

/** The SQLite result code of a better-sqlite3 error ('SQLITE_BUSY', ...), if it is one. */
export function sqliteCode(error: unknown): string | undefined {
  const code: unknown = error instanceof Error ? (error as { code?: unknown }).code : undefined;
  return typeof code === 'string' && code.startsWith('SQLITE_') ? code : undefined;
}
