import type { Database } from './sqlite.js';
import { JournalError } from './states.js';

/**
 * One step of the journal's schema. Steps are applied in order, each in its own transaction
 * together with `PRAGMA user_version = version`, so a crash mid-migration leaves the file at the
 * previous version, never half-way.
 *
 * Never edit a released step: a journal written by an older program has already run it. Add a
 * new step instead (and a fixture of the previous version to test the upgrade from).
 */
export interface Migration {
  /** The `user_version` the file has after this step. */
  version: number;
  /** What the step does, for the log. */
  description: string;
  up: (db: Database) => void;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: 'files table',
    up: (db) => {
      // One row per file version (path + size + mtime). mtime_ms is REAL because stat's
      // mtimeMs has a fractional part: keeping the exact double makes "same version" an exact
      // comparison.
      db.exec(`
        CREATE TABLE files (
          id           INTEGER PRIMARY KEY,
          path         TEXT    NOT NULL,
          size         INTEGER NOT NULL,
          mtime_ms     REAL    NOT NULL,
          checksum     TEXT,
          state        TEXT    NOT NULL,
          asset_id     TEXT,
          archive_path TEXT,
          error        TEXT,
          updated_at   INTEGER NOT NULL
        );
      `);
    },
  },
  {
    version: 2,
    description: 'transition history, server status, retry bookkeeping, indexes',
    up: (db) => {
      db.exec(`
        ALTER TABLE files ADD COLUMN server_status TEXT CHECK (server_status IN ('created', 'duplicate'));
        ALTER TABLE files ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE files ADD COLUMN next_retry_at INTEGER;
        ALTER TABLE files ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;
        UPDATE files SET created_at = updated_at;

        CREATE TABLE transitions (
          id      INTEGER PRIMARY KEY,
          file_id INTEGER NOT NULL REFERENCES files (id) ON DELETE CASCADE,
          state   TEXT    NOT NULL,
          at      INTEGER NOT NULL,
          detail  TEXT    NOT NULL DEFAULT '{}'
        );
        -- A v1 row knows only where it is now; that becomes its first recorded step.
        INSERT INTO transitions (file_id, state, at, detail)
          SELECT id, state, updated_at, '{"migratedFrom":1}' FROM files ORDER BY id;

        CREATE INDEX files_path ON files (path);
        CREATE INDEX files_state ON files (state);
        CREATE INDEX files_version ON files (path, size, mtime_ms);
        CREATE INDEX files_updated_at ON files (updated_at);
        CREATE INDEX transitions_file ON transitions (file_id);
      `);
    },
  },
  {
    version: 3,
    description: 'partial indexes for the failed and the final rows',
    up: (db) => {
      // files_state and files_updated_at changed with every transition (state and updated_at
      // always do), but only failed() asks for a state and only recent() for final rows by time.
      // Partial indexes hold just those rows: a transition between unfinished states leaves
      // them alone. The WHERE of files_final_updated_at must stay the journal's IS_FINAL text,
      // or SQLite will not see that recent() may use it.
      db.exec(`
        DROP INDEX files_state;
        DROP INDEX files_updated_at;
        CREATE INDEX files_failed ON files (state) WHERE state = 'failed';
        CREATE INDEX files_final_updated_at ON files (updated_at)
          WHERE (state = 'archived' OR state = 'deleted' OR state = 'kept' OR state = 'skipped' OR state = 'failed' OR state = 'gone');
      `);
    },
  },
];

/** The schema version this program writes and reads. */
export const SCHEMA_VERSION: number = MIGRATIONS[MIGRATIONS.length - 1]?.version ?? 0;

export function schemaVersion(db: Database): number {
  return db.pragma('user_version', { simple: true }) as number;
}

/** The refusal for a journal written by a newer program; the file is never rewritten. */
export function newerSchemaError(file: string, found: number, supported = SCHEMA_VERSION): JournalError {
  return new JournalError(
    'newer-schema',
    `The journal ${file} has schema version ${found}, but this immich-auto-uploader supports up to version ` +
      `${supported}: it was written by a newer release. Fix: upgrade immich-auto-uploader, or point ` +
      `STATE_DIRECTORY elsewhere (the file is left untouched).`,
  );
}

/**
 * Brings the journal up to the newest version, one transaction per step. Returns the versions
 * applied. A file newer than `migrations` knows is refused with a 'newer-schema' JournalError
 * before anything is written.
 */
export function migrate(db: Database, file: string, migrations: readonly Migration[] = MIGRATIONS): number[] {
  const latest = migrations[migrations.length - 1]?.version ?? 0;
  const found = schemaVersion(db);
  if (found > latest) throw newerSchemaError(file, found, latest);
  const applied: number[] = [];
  for (const step of migrations) {
    if (step.version <= found) continue;
    // IMMEDIATE: take the write lock before reading anything, so a concurrent writer cannot
    // slip in between our read of the schema and our change of it.
    db.transaction(() => {
      step.up(db);
      db.pragma(`user_version = ${step.version}`);
    }).immediate();
    applied.push(step.version);
  }
  return applied;
}
