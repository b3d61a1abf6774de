import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { pino, type Logger } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { IS_FINAL, JOURNAL_FILE, Journal, JournalError, writeFailure, type FileVersionRef, type FileState } from '../../src/journal/journal.js';
import { sentSidecarOf, sidecarSentTo } from '../../src/pipeline/sidecar.js';
import { migrate, MIGRATIONS, SCHEMA_VERSION, type Migration } from '../../src/journal/schema.js';
import { openDatabase, type Database } from '../../src/journal/sqlite.js';
import { canTransition, FILE_STATES as JOURNAL_STATES, FINAL_STATES, isFinal as isFinalState } from '../../src/pipeline/states.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { thrownBy } from '../helpers/expect-error.js';
import { makeTempDir } from '../helpers/temp-dir.js';

const FIXTURE_V1 = new URL('../fixtures/journal-v1.sql', import.meta.url);
const FULL_CHILD = fileURLToPath(new URL('../fixtures/journal-full-child.ts', import.meta.url));

let dir: Awaited<ReturnType<typeof makeTempDir>>;
let clock: FakeClock;
let logLines: Array<{ level: number; msg: string; [key: string]: unknown }>;
let logger: Logger;
const opened: Journal[] = [];

beforeEach(async () => {
  dir = await makeTempDir('iau-journal-');
  clock = new FakeClock();
  logLines = [];
  logger = pino({ level: 'debug' }, { write: (line: string) => logLines.push(JSON.parse(line) as (typeof logLines)[number]) });
});
afterEach(async () => {
  for (const journal of opened.splice(0)) journal.close();
  await dir.remove();
});

/** Opens the journal in the state directory (the temp folder's `state` unless told). */
function open(directory = join(dir.path, 'state')): Journal {
  const journal = Journal.open({ directory, logger, clock });
  opened.push(journal);
  return journal;
}

const stateDir = (): string => join(dir.path, 'state');
const dbFile = (): string => join(stateDir(), JOURNAL_FILE);


/** Raw access to the file, for what the API does not show. */
function withRaw<T>(file: string, use: (db: Database) => T): T {
  const db = openDatabase(file);
  try {
    return use(db);
  } finally {
    db.close();
  }
}

const transitionsOf = (journal: Journal, path: string) => journal.history(path)[0]?.transitions ?? [];

/** A way from nothing to each state, recorded step by step. */
const ROUTE: Record<FileState, FileState[]> = {
  discovered: ['discovered'],
  settled: ['discovered', 'settled'],
  hashed: ['discovered', 'settled', 'hashed'],
  uploading: ['discovered', 'settled', 'hashed', 'uploading'],
  'on-server': ['discovered', 'settled', 'hashed', 'uploading', 'on-server'],
  archiving: ['discovered', 'settled', 'hashed', 'on-server', 'archiving'],
  archived: ['discovered', 'settled', 'hashed', 'on-server', 'archiving', 'archived'],
  deleting: ['discovered', 'settled', 'hashed', 'on-server', 'deleting'],
  deleted: ['discovered', 'settled', 'hashed', 'on-server', 'deleting', 'deleted'],
  kept: ['discovered', 'settled', 'hashed', 'on-server', 'kept'],
  skipped: ['discovered', 'skipped'],
  failed: ['discovered', 'failed'],
  gone: ['discovered', 'gone'],
};

function drive(journal: Journal, file: FileVersionRef, to: FileState): number {
  let id = 0;
  for (const state of ROUTE[to]) id = journal.record(file, state);
  return id;
}

describe('states', () => {
  const NON_FINAL = JOURNAL_STATES.filter((state) => !isFinalState(state));
  const expected = new Set<string>([
    'discovered>settled',
    'settled>hashed',
    'hashed>uploading',
    'hashed>on-server',
    'uploading>on-server',
    'on-server>archiving',
    'on-server>deleting',
    'on-server>kept',
    'archiving>archived',
    'archiving>kept',
    'deleting>deleted',
    'deleting>kept',
    'failed>discovered',
    'failed>gone',
    ...NON_FINAL.flatMap((from) => ['skipped', 'failed', 'gone', 'discovered', from].map((to) => `${from}>${to}`)),
  ]);

  it('allows exactly the documented moves', () => {
    expect(FINAL_STATES).toEqual(['archived', 'deleted', 'kept', 'skipped', 'failed', 'gone']);
    const allowed = JOURNAL_STATES.flatMap((from) => JOURNAL_STATES.filter((to) => canTransition(from, to)).map((to) => `${from}>${to}`));
    expect(new Set(allowed)).toEqual(expected);
  });

  it('record() accepts every legal move on the same row', () => {
    const journal = open();
    let n = 0;
    for (const pair of expected) {
      const [from, to] = pair.split('>') as [FileState, FileState];
      const file = { path: `/watch/legal-${n++}.jpg`, size: 10, mtimeMs: 1000 };
      const id = drive(journal, file, from);
      expect(journal.record(file, to), pair).toBe(id);
      expect(journal.current(file.path)?.state, pair).toBe(to);
      expect(transitionsOf(journal, file.path).map((t) => t.state), pair).toEqual([...ROUTE[from], to]);
    }
  });

  it('record() refuses every illegal move from a non-final state, writing nothing', () => {
    const journal = open();
    let n = 0;
    for (const from of NON_FINAL) {
      for (const to of JOURNAL_STATES) {
        if (expected.has(`${from}>${to}`)) continue;
        const file = { path: `/watch/illegal-${n++}.jpg`, size: 10, mtimeMs: 1000 };
        drive(journal, file, from);
        const before = journal.current(file.path);
        const error = thrownBy(JournalError, () => journal.record(file, to));
        expect(error.kind, `${from}>${to}`).toBe('illegal-transition');
        expect(error.message).toContain(`${from} -> ${to}`);
        expect(journal.current(file.path)).toEqual(before);
        expect(transitionsOf(journal, file.path)).toHaveLength(ROUTE[from].length);
      }
    }
    expect(n).toBeGreaterThan(40);
  });

  it('refuses a state it does not know', () => {
    const journal = open();
    const error = thrownBy(JournalError, () => journal.record({ path: '/a', size: 1, mtimeMs: 1 }, 'uploaded' as FileState));
    expect(error.kind).toBe('illegal-transition');
  });
});

describe('record()', () => {
  const file = { path: '/watch/2024/IMG_1.jpg', size: 1234, mtimeMs: 1_700_000_000_123.456 };

  it('creates a row for a new path, with timestamps from the clock', () => {
    const journal = open();
    const id = journal.record(file, 'discovered');
    expect(journal.current(file.path)).toEqual({
      id,
      ...file,
      checksum: null,
      state: 'discovered',
      assetId: null,
      serverStatus: null,
      archivePath: null,
      error: null,
      attempts: 0,
      nextRetryAt: null,
      createdAt: clock.now(),
      updatedAt: clock.now(),
    });
    expect(transitionsOf(journal, file.path)).toEqual([{ state: 'discovered', at: clock.now(), detail: { from: null } }]);
  });

  it('stores what each step learned and keeps it along the way', async () => {
    const journal = open();
    const id = journal.record(file, 'discovered');
    journal.record(file, 'settled');
    journal.record(file, 'hashed', { checksum: 'abc' });
    journal.record(file, 'uploading');
    await clock.advance(1000);
    journal.record(file, 'on-server', { assetId: 'asset-9', serverStatus: 'created' });
    journal.record(file, 'archiving', { archivePath: '/archive/2024/IMG_1.jpg' });
    expect(journal.record(file, 'archived')).toBe(id);
    expect(journal.current(file.path)).toMatchObject({
      id,
      state: 'archived',
      checksum: 'abc',
      assetId: 'asset-9',
      serverStatus: 'created',
      archivePath: '/archive/2024/IMG_1.jpg',
      createdAt: clock.now() - 1000,
      updatedAt: clock.now(),
    });
    const steps = transitionsOf(journal, file.path);
    expect(steps.map((t) => t.state)).toEqual(['discovered', 'settled', 'hashed', 'uploading', 'on-server', 'archiving', 'archived']);
    expect(steps[4]).toEqual({ state: 'on-server', at: clock.now(), detail: { from: 'uploading', assetId: 'asset-9', serverStatus: 'created' } });
  });

  it('re-recording a non-final state is harmless', () => {
    const journal = open();
    const id = journal.record(file, 'discovered');
    expect(journal.record(file, 'discovered')).toBe(id);
    journal.record(file, 'settled');
    expect(journal.record(file, 'settled')).toBe(id);
    expect(journal.current(file.path)?.state).toBe('settled');
  });

  it('a failure counts an attempt and stores its error and retry time; a retry reuses the row', async () => {
    const journal = open();
    const id = drive(journal, file, 'uploading');
    journal.record(file, 'failed', { error: 'HTTP 503', nextRetryAt: clock.now() + 60_000 });
    expect(journal.current(file.path)).toMatchObject({ id, state: 'failed', error: 'HTTP 503', attempts: 1, nextRetryAt: clock.now() + 60_000 });

    await clock.advance(60_000);
    expect(journal.record(file, 'discovered', { reason: 'retry' })).toBe(id);
    expect(journal.current(file.path)).toMatchObject({ id, state: 'discovered', error: null, attempts: 1, nextRetryAt: null });
    journal.record(file, 'failed', { error: 'HTTP 400' });
    expect(journal.current(file.path)).toMatchObject({ id, attempts: 2, error: 'HTTP 400', nextRetryAt: null });
    expect(transitionsOf(journal, file.path).at(-2)?.detail).toEqual({ from: 'failed', reason: 'retry' });
  });

  it('a skip keeps its reason as the row error', () => {
    const journal = open();
    journal.record(file, 'discovered');
    journal.record(file, 'skipped', { reason: 'empty' });
    expect(journal.current(file.path)).toMatchObject({ state: 'skipped', error: 'empty', attempts: 0 });
  });

  it('a changed file restarts its unfinished row at discovered, forgetting the old content', () => {
    const journal = open();
    const id = drive(journal, file, 'on-server');
    journal.record(file, 'on-server', { checksum: 'old', assetId: 'asset-old', serverStatus: 'duplicate' });
    const changed = { ...file, size: 9999, mtimeMs: file.mtimeMs + 5 };
    expect(journal.record(changed, 'discovered')).toBe(id);
    expect(journal.current(file.path)).toMatchObject({
      id,
      size: 9999,
      mtimeMs: changed.mtimeMs,
      state: 'discovered',
      checksum: null,
      assetId: null,
      serverStatus: null,
    });
    const last = transitionsOf(journal, file.path).at(-1);
    expect(last).toMatchObject({ state: 'discovered', detail: { from: 'on-server', restart: 'file changed', previous: { size: 1234, mtimeMs: file.mtimeMs } } });
  });

  it('a changed file recorded straight into a later state restarts first, then moves', () => {
    const journal = open();
    const id = drive(journal, file, 'hashed');
    const changed = { ...file, size: 1 };
    expect(journal.record(changed, 'settled')).toBe(id);
    expect(transitionsOf(journal, file.path).slice(-2).map((t) => t.state)).toEqual(['discovered', 'settled']);
    expect(journal.current(file.path)).toMatchObject({ size: 1, state: 'settled' });
  });

  it('a changed file with an impossible next state throws and leaves the row as it was', () => {
    const journal = open();
    drive(journal, file, 'hashed');
    const before = journal.current(file.path);
    expect(thrownBy(JournalError, () => journal.record({ ...file, size: 1 }, 'uploading')).kind).toBe('illegal-transition');
    expect(journal.current(file.path)).toEqual(before);
    expect(transitionsOf(journal, file.path)).toHaveLength(3);
  });

  it('after a final state, the next record starts a new row', () => {
    const journal = open();
    const first = drive(journal, file, 'kept');
    const second = journal.record(file, 'discovered');
    expect(second).not.toBe(first);
    expect(journal.current(file.path)?.id).toBe(second);
    // A failed row is reused only for a retry of the same version; a new version gets a new row.
    journal.record(file, 'failed', { error: 'x' });
    const third = journal.record({ ...file, size: 7 }, 'discovered');
    expect(third).not.toBe(second);
    // A new row may start in any state: the pipeline may skip a file it just saw.
    const fourth = journal.record({ path: '/watch/big.mov', size: 1, mtimeMs: 1 }, 'skipped', { reason: 'too-large' });
    expect(journal.current('/watch/big.mov')).toMatchObject({ id: fourth, state: 'skipped', error: 'too-large' });
  });

  it('refuses a version without a size or mtime', () => {
    const journal = open();
    expect(() => journal.record({ path: '/a', size: Number.NaN, mtimeMs: 1 }, 'discovered')).toThrow(TypeError);
  });
});

describe('batches: recordLater() and recordWriteAhead()', () => {
  const at = (name: string): FileVersionRef => ({ path: `/watch/${name}.jpg`, size: 10, mtimeMs: 1000 });
  /** What another connection sees on disk: the newest row's state per path, committed only. */
  const onDisk = (): Record<string, string> =>
    withRaw(dbFile(), (db) =>
      Object.fromEntries(
        (db.prepare('SELECT path, state FROM files WHERE id IN (SELECT MAX(id) FROM files GROUP BY path)').all() as Array<{
          path: string;
          state: string;
        }>).map((row) => [row.path, row.state]),
      ),
    );
  /** Makes every commit that records `state` fail, as a full disk would, until the returned undo. */
  const failCommitsOf = (state: FileState): (() => void) => {
    withRaw(dbFile(), (db) =>
      db.exec(`CREATE TRIGGER fail_commit BEFORE INSERT ON transitions WHEN NEW.state = '${state}'
               BEGIN SELECT RAISE(ABORT, 'disk I/O error (test)'); END`),
    );
    return () => withRaw(dbFile(), (db) => db.exec('DROP TRIGGER fail_commit'));
  };

  it('write-ahead records of the same moment share one commit, after what was recorded before them', async () => {
    const journal = open();
    for (const name of ['a', 'b', 'c']) drive(journal, at(name), 'on-server');
    journal.recordLater(at('x'), 'discovered');
    const waiting = [
      journal.recordWriteAhead(at('a'), 'archiving', { archivePath: '/archive/a.jpg' }),
      journal.recordWriteAhead(at('b'), 'deleting'),
      journal.recordWriteAhead(at('c'), 'archiving', { archivePath: '/archive/c.jpg' }),
    ];
    journal.recordLater(at('a'), 'archived'); // recorded before the commit: part of it, after 'archiving'
    // Nothing is committed until the next turn of the event loop...
    expect(onDisk()).toMatchObject({ '/watch/a.jpg': 'on-server', '/watch/b.jpg': 'on-server' });
    expect(onDisk()['/watch/x.jpg']).toBeUndefined();
    // ...and then all of it is, before the first waiter hears back.
    await waiting[0];
    expect(onDisk()).toEqual({ '/watch/a.jpg': 'archived', '/watch/b.jpg': 'deleting', '/watch/c.jpg': 'archiving', '/watch/x.jpg': 'discovered' });
    await Promise.all(waiting);
    expect(transitionsOf(journal, '/watch/a.jpg').map((t) => t.state)).toEqual([...ROUTE['on-server'], 'archiving', 'archived']);
    expect(journal.current('/watch/c.jpg')).toMatchObject({ state: 'archiving', archivePath: '/archive/c.jpg' });
  });

  it('a failed commit rejects every write-ahead record of the batch and writes none of it', async () => {
    const journal = open();
    for (const name of ['a', 'b', 'c']) drive(journal, at(name), 'on-server');
    const before = onDisk();
    const undo = failCommitsOf('deleting');
    journal.recordLater(at('x'), 'discovered');
    const results = await Promise.allSettled([
      journal.recordWriteAhead(at('a'), 'archiving'),
      journal.recordWriteAhead(at('b'), 'deleting'),
      journal.recordWriteAhead(at('c'), 'archiving'),
    ]);
    expect(results.map((result) => result.status)).toEqual(['rejected', 'rejected', 'rejected']);
    for (const result of results) expect(result.status === 'rejected' && String(result.reason)).toContain('disk I/O error (test)');
    expect(onDisk()).toEqual(before);
    expect(transitionsOf(journal, '/watch/a.jpg')).toHaveLength(ROUTE['on-server'].length);
    expect(logLines.some((line) => line.level === 50 && line.msg.startsWith('cannot write the journal '))).toBe(true);

    undo();
    await journal.recordWriteAhead(at('a'), 'archiving');
    expect(onDisk()['/watch/a.jpg']).toBe('archiving');
    expect(logLines.filter((line) => line.msg === 'the journal is written again')).toHaveLength(1);
  });

  it('an illegal write-ahead move rejects only its own record; the rest of the batch commits', async () => {
    const journal = open();
    drive(journal, at('a'), 'hashed');
    drive(journal, at('b'), 'on-server');
    const illegal = journal.recordWriteAhead(at('a'), 'archiving');
    const legal = journal.recordWriteAhead(at('b'), 'archiving');
    const error = await illegal.then(
      () => undefined,
      (reason: unknown) => reason,
    );
    expect(error).toBeInstanceOf(JournalError);
    expect((error as JournalError).kind).toBe('illegal-transition');
    await legal;
    expect(onDisk()).toEqual({ '/watch/a.jpg': 'hashed', '/watch/b.jpg': 'archiving' });
    expect(transitionsOf(journal, '/watch/a.jpg')).toHaveLength(ROUTE.hashed.length);
    expect(logLines.filter((line) => line.level === 50)).toEqual([]); // the caller was told: no log
  });

  it('a batch keeps every transition of a path, its details and its restarts, as one-by-one records would', () => {
    const journal = open();
    const file = at('a');
    const changed = { ...file, size: 99 };
    journal.recordLater(file, 'discovered');
    journal.recordLater(file, 'settled');
    journal.recordLater(file, 'hashed', { checksum: 'abc' });
    journal.recordLater(changed, 'settled'); // the file changed: restart, then settled
    journal.recordLater(changed, 'hashed', { checksum: 'def' });
    journal.recordLater(changed, 'uploading', { checksum: 'zzz' }); // a later detail overrides the stored one
    journal.recordLater(changed, 'archived'); // illegal: logged, and nothing else is lost
    journal.recordLater(changed, 'skipped', { reason: 'test' });
    journal.recordLater(changed, 'discovered'); // after a final state: a new row
    journal.flush();

    const [newest, first] = journal.history(file.path);
    expect(newest?.file).toMatchObject({ size: 99, state: 'discovered', checksum: null });
    expect(newest?.transitions.map((t) => t.detail)).toEqual([{ from: null }]);
    expect(first?.file).toMatchObject({ id: 1, size: 99, state: 'skipped', checksum: 'zzz', error: 'test' });
    expect(newest?.file.id).toBeGreaterThan(first?.file.id ?? Infinity);
    expect(first?.transitions.map((t) => [t.state, t.detail])).toEqual([
      ['discovered', { from: null }],
      ['settled', { from: 'discovered' }],
      ['hashed', { from: 'settled', checksum: 'abc' }],
      ['discovered', { from: 'hashed', restart: 'file changed', previous: { size: 10, mtimeMs: 1000 } }],
      ['settled', { from: 'discovered' }],
      ['hashed', { from: 'settled', checksum: 'def' }],
      ['uploading', { from: 'hashed', checksum: 'zzz' }],
      ['skipped', { from: 'uploading', reason: 'test' }],
    ]);
    expect(logLines.filter((line) => line.level === 50).map((line) => line.msg)).toEqual([
      expect.stringContaining('Illegal journal transition uploading -> archived'),
    ]);
  });

  it('close() commits what is waiting and answers the write-ahead records', async () => {
    const journal = open();
    drive(journal, at('a'), 'on-server');
    const waiting = journal.recordWriteAhead(at('a'), 'deleting');
    journal.recordLater(at('b'), 'discovered');
    journal.close();
    await waiting;
    expect(onDisk()).toEqual({ '/watch/a.jpg': 'deleting', '/watch/b.jpg': 'discovered' });
  });
});

describe('a disk that refuses to write', () => {
  it('fails commits with a message that names the journal and the fix, said once while they fail', async () => {
    // A real refusal: the process may not grow a file past 200 KB, so SQLite's writes fail (EFBIG).
    const state = join(dir.path, 'small');
    const script = `trap '' XFSZ; ulimit -f 400; exec "${process.execPath}" --import tsx "${FULL_CHILD}" "${state}"`;
    const { stdout } = await promisify(execFile)('sh', ['-c', script]);
    const result = JSON.parse(stdout) as { recorded: number; failedAgain: number; kind?: string; message: string; errors: string[] };
    expect(result.recorded).toBeGreaterThan(0);
    expect(result.kind).toBe('unwritable');
    expect(result.message).toBe(
      `cannot write the journal ${join(state, JOURNAL_FILE)}: disk I/O error (SQLITE_IOERR_WRITE). Fix: check its disk ` +
        '(full, failing or read-only), or point STATE_DIRECTORY elsewhere; files stay where they are and are tried again',
    );
    // Five more commits by record() and five in the background failed too: one line said it.
    expect(result.failedAgain).toBe(5);
    expect(result.errors).toEqual([result.message]);
  });

  it('says "free space" for a full disk, and leaves an error that is not the disk\'s as it is', () => {
    const full = withRaw(join(dir.path, 'full.db'), (db) => {
      db.exec('CREATE TABLE t (x TEXT)');
      db.pragma(`max_page_count = ${db.pragma('page_count', { simple: true }) as number}`);
      return thrownBy(Error, () => {
        for (;;) db.prepare('INSERT INTO t VALUES (?)').run('x'.repeat(1000));
      });
    });
    const failure = writeFailure(full, '/state/journal.db');
    expect(failure).toBeInstanceOf(JournalError);
    expect(failure).toMatchObject({ kind: 'unwritable', cause: full });
    expect((failure as Error).message).toMatch(/^cannot write the journal \/state\/journal\.db: database or disk is full \(SQLITE_FULL\)\. Fix: free space on its disk, /);

    const bug = withRaw(join(dir.path, 'bug.db'), (db) => thrownBy(Error, () => db.exec('INSERT INTO missing VALUES (1)')));
    expect(writeFailure(bug, '/state/journal.db')).toBe(bug);
    const plain = new Error('not SQLite');
    expect(writeFailure(plain, '/state/journal.db')).toBe(plain);
  });
});

describe('findFinal()', () => {
  it('finds only a final row of exactly this version, fractional mtime included', () => {
    const journal = open();
    const file = { path: '/watch/a.jpg', size: 10, mtimeMs: 1_700_000_000_000.123 };
    drive(journal, file, 'on-server');
    expect(journal.findFinal(file.path, file.size, file.mtimeMs)).toBeUndefined();
    journal.record(file, 'kept');
    expect(journal.findFinal(file.path, file.size, file.mtimeMs)?.state).toBe('kept');
    expect(journal.findFinal(file.path, file.size, 1_700_000_000_000.124)).toBeUndefined();
    expect(journal.findFinal(file.path, 11, file.mtimeMs)).toBeUndefined();
    expect(journal.findFinal('/watch/A.jpg', file.size, file.mtimeMs)).toBeUndefined();
  });

  it('returns the newest final row of the version when it has several', () => {
    const journal = open();
    const file = { path: '/watch/back.jpg', size: 10, mtimeMs: 1_700_000_000_000 };
    drive(journal, file, 'gone');
    const kept = drive(journal, file, 'kept'); // it came back: a new row, since 'gone' is final
    expect(journal.findFinal(file.path, file.size, file.mtimeMs)).toMatchObject({ id: kept, state: 'kept' });
    const goneAgain = drive(journal, file, 'gone');
    expect(journal.findFinal(file.path, file.size, file.mtimeMs)).toMatchObject({ id: goneAgain, state: 'gone' });
  });

  it('matches the size and mtime stat reports for a real file, to the last bit', async () => {
    const journal = open();
    const path = join(dir.path, 'real.jpg');
    await writeFile(path, 'pixels');
    const version = await stat(path);
    drive(journal, { path, size: version.size, mtimeMs: version.mtimeMs }, 'kept');
    const again = await stat(path);
    expect(journal.findFinal(path, again.size, again.mtimeMs)?.mtimeMs).toBe(version.mtimeMs);
  });

  it('answers 100k lookups on 100k rows quickly (timing printed, not asserted)', () => {
    const journal = open();
    opened.pop();
    journal.close();
    const count = 100_000;
    let started = performance.now();
    withRaw(dbFile(), (db) => {
      const insert = db.prepare(
        "INSERT INTO files (path, size, mtime_ms, state, attempts, created_at, updated_at) VALUES (?, ?, ?, 'kept', 0, 0, 0)",
      );
      db.transaction(() => {
        for (let i = 0; i < count; i++) insert.run(`/watch/${i % 100}/IMG_${i}.jpg`, i, 1_600_000_000_000 + i * 1.5);
      })();
    });
    const insertMs = performance.now() - started;
    const reopened = open();
    started = performance.now();
    let found = 0;
    for (let i = 0; i < count; i++) {
      const row = reopened.findFinal(`/watch/${i % 100}/IMG_${i}.jpg`, i, 1_600_000_000_000 + i * 1.5);
      if (row?.size === i) found++;
    }
    const lookupMs = performance.now() - started;
    expect(found).toBe(count);
    expect(reopened.findFinal('/watch/0/IMG_0.jpg', 0, 1)).toBeUndefined();
    console.log(`findFinal: ${count} rows inserted in ${insertMs.toFixed(0)} ms, ${count} lookups in ${lookupMs.toFixed(0)} ms`);
  });
});

describe('queries', () => {
  it('unfinished() lists rows a crash would interrupt', () => {
    const journal = open();
    drive(journal, { path: '/w/a.jpg', size: 1, mtimeMs: 1 }, 'uploading');
    drive(journal, { path: '/w/b.jpg', size: 1, mtimeMs: 1 }, 'archived');
    drive(journal, { path: '/w/c.jpg', size: 1, mtimeMs: 1 }, 'deleting');
    drive(journal, { path: '/w/d.jpg', size: 1, mtimeMs: 1 }, 'failed');
    expect(journal.unfinished().map((row) => [row.path, row.state])).toEqual([
      ['/w/a.jpg', 'uploading'],
      ['/w/c.jpg', 'deleting'],
    ]);
  });

  it('failed() lists the newest failure per path; makeFailedEligible() makes them due', async () => {
    const journal = open();
    const a = { path: '/w/a.jpg', size: 1, mtimeMs: 1 };
    const b = { path: '/w/b.jpg', size: 1, mtimeMs: 1 };
    drive(journal, a, 'failed');
    drive(journal, b, 'failed');
    journal.record({ ...b, size: 2 }, 'discovered'); // b changed: its old failure is history
    drive(journal, { path: '/w/c.jpg', size: 1, mtimeMs: 1 }, 'kept');
    expect(journal.failed().map((row) => row.path)).toEqual(['/w/a.jpg']);
    expect(journal.failed()[0]?.nextRetryAt).toBeNull();

    await clock.advance(5000);
    expect(journal.makeFailedEligible()).toBe(1);
    expect(journal.failed()[0]?.nextRetryAt).toBe(clock.now());
    expect(journal.makeFailedEligible(42)).toBe(1);
    expect(journal.current(a.path)?.nextRetryAt).toBe(42);
    expect(journal.current(b.path)?.nextRetryAt).toBeNull();
  });

  it('counts() counts each path once, by its newest row', () => {
    const journal = open();
    const a = { path: '/w/a.jpg', size: 1, mtimeMs: 1 };
    drive(journal, a, 'kept');
    drive(journal, { ...a, size: 2 }, 'settled');
    drive(journal, { path: '/w/b.jpg', size: 1, mtimeMs: 1 }, 'kept');
    drive(journal, { path: '/w/c.jpg', size: 1, mtimeMs: 1 }, 'failed');
    const counts = journal.counts();
    expect(Object.keys(counts).sort()).toEqual([...JOURNAL_STATES].sort());
    expect(counts).toMatchObject({ settled: 1, kept: 1, failed: 1, archived: 0, discovered: 0 });
  });

  it('recent() lists final outcomes, newest first', async () => {
    const journal = open();
    drive(journal, { path: '/w/1.jpg', size: 1, mtimeMs: 1 }, 'archived');
    await clock.advance(1);
    drive(journal, { path: '/w/2.jpg', size: 1, mtimeMs: 1 }, 'uploading');
    drive(journal, { path: '/w/3.jpg', size: 1, mtimeMs: 1 }, 'failed');
    await clock.advance(1);
    drive(journal, { path: '/w/4.jpg', size: 1, mtimeMs: 1 }, 'deleted');
    expect(journal.recent(10).map((row) => row.path)).toEqual(['/w/4.jpg', '/w/3.jpg', '/w/1.jpg']);
    expect(journal.recent(1).map((row) => row.path)).toEqual(['/w/4.jpg']);
  });

  it('latestWithStem() gives the newest row of the path and of each of its extensions, most recently updated first', async () => {
    const journal = open();
    drive(journal, { path: '/w/IMG_1.jpg', size: 1, mtimeMs: 1 }, 'archived');
    await clock.advance(1);
    drive(journal, { path: '/w/IMG_1.mov', size: 1, mtimeMs: 1 }, 'deleted');
    drive(journal, { path: '/w/IMG_1', size: 1, mtimeMs: 1 }, 'kept');
    await clock.advance(1);
    drive(journal, { path: '/w/IMG_1.jpg', size: 2, mtimeMs: 2 }, 'hashed'); // a new version: its row is the newest
    for (const other of ['/w/IMG_10.jpg', '/w/IMG_1 (1).jpg', '/w/IMG_1-', '/w/IMG_1/a.jpg', '/w/IMG_0.jpg', '/w/IMG_']) {
      drive(journal, { path: other, size: 1, mtimeMs: 1 }, 'archived');
    }
    expect(journal.latestWithStem('/w/IMG_1').map((row) => [row.path, row.state, row.size])).toEqual([
      ['/w/IMG_1.jpg', 'hashed', 2],
      ['/w/IMG_1', 'kept', 1],
      ['/w/IMG_1.mov', 'deleted', 1],
    ]);
    expect(journal.latestWithStem('/w/IMG_3')).toEqual([]);
  });

  it('totals() counts uploads that created assets, by when they reached the server', async () => {
    const journal = open();
    const upload = (path: string, size: number, serverStatus: 'created' | 'duplicate') => {
      const file = { path, size, mtimeMs: 1 };
      drive(journal, file, 'hashed');
      journal.record(file, 'on-server', { serverStatus, assetId: path });
      journal.record(file, 'kept');
    };
    upload('/w/old.jpg', 100, 'created');
    await clock.advance(10_000);
    const since = clock.now();
    upload('/w/new.jpg', 20, 'created');
    upload('/w/dup.jpg', 5, 'duplicate');
    expect(journal.totals()).toEqual({ files: 2, bytes: 120 });
    expect(journal.totals(since)).toEqual({ files: 1, bytes: 20 });
    expect(journal.totals(since + 1)).toEqual({ files: 0, bytes: 0 });
  });

  it('totals() still counts an upload whose archive failed, and which a retry then found on the server', () => {
    const journal = open();
    const file = { path: '/w/IMG_1.jpg', size: 30, mtimeMs: 1 };
    drive(journal, file, 'hashed');
    journal.record(file, 'on-server', { serverStatus: 'created', assetId: 'a1' });
    journal.record(file, 'archiving', { archivePath: '/a/IMG_1.jpg' });
    journal.record(file, 'failed', { error: 'archive: no space left' });
    // The retry, on the same row.
    drive(journal, file, 'hashed');
    journal.record(file, 'on-server', { serverStatus: 'duplicate', assetId: 'a1' });
    journal.record(file, 'archiving', { archivePath: '/a/IMG_1.jpg' });
    journal.record(file, 'archived', { archivePath: '/a/IMG_1.jpg' });
    expect(journal.totals()).toEqual({ files: 1, bytes: 30 });
    expect(journal.current(file.path)?.serverStatus).toBe('created');
  });

  it("keeps the sidecar sent with a file in its 'on-server' transition, for recovery to find", async () => {
    const journal = open();
    const file = { path: '/w/a.jpg', size: 10, mtimeMs: 1.5 };
    const sidecar = { path: '/w/a.jpg.xmp', size: 300, mtimeMs: 2.25 };
    for (const state of ['discovered', 'settled', 'hashed', 'uploading'] as const) journal.record(file, state);
    const id = journal.record(file, 'on-server', { assetId: 'x', serverStatus: 'created', sidecar });
    journal.record(file, 'deleting');
    const [row] = journal.unfinished();
    expect(row?.id).toBe(id);
    expect(sentSidecarOf(journal.transitions(id))).toEqual(sidecar);
    // Sent with nothing, or recorded by a version that did not record sidecars: none to delete.
    const other = { path: '/w/b.jpg', size: 10, mtimeMs: 1 };
    expect(sentSidecarOf(journal.transitions(drive(journal, other, 'on-server')))).toBeUndefined();
  });

  it('finds, across the rows of a version, the sidecar an upload sent to the asset the server has', () => {
    const journal = open();
    const file = { path: '/w/a.jpg', size: 10, mtimeMs: 1.5 };
    const sidecar = { path: '/w/a.jpg.xmp', size: 300, mtimeMs: 2.25 };
    // A run in keep mode sent it; a later run (delete mode) has a row of its own for the version.
    for (const state of ['discovered', 'settled', 'hashed', 'uploading'] as const) journal.record(file, state);
    journal.record(file, 'on-server', { assetId: 'a1', serverStatus: 'created', sidecar });
    journal.record(file, 'kept');
    drive(journal, file, 'hashed');
    journal.record({ path: '/w/other.jpg', size: 10, mtimeMs: 1.5 }, 'on-server', { assetId: 'a2', serverStatus: 'created', sidecar });
    const transitions = journal.versionTransitions(file.path, file.size, file.mtimeMs);
    expect(transitions.map((entry) => entry.state)).toEqual(['discovered', 'settled', 'hashed', 'uploading', 'on-server', 'kept', ...ROUTE.hashed]);
    expect(sidecarSentTo('a1', transitions)).toEqual(sidecar);
    // The server has another asset of these bytes (the first was deleted in Immich): not ours.
    expect(sidecarSentTo('a3', transitions)).toBeUndefined();
    expect(journal.versionTransitions(file.path, file.size + 1, file.mtimeMs)).toEqual([]);
  });

  it('history() finds by path, file name or part of the path, closest first, newest first', async () => {
    const journal = open();
    drive(journal, { path: '/photos/Urlaub/IMG_1.JPG', size: 1, mtimeMs: 1 }, 'archived');
    await clock.advance(1);
    drive(journal, { path: '/photos/Ürlaub 2/img_1.jpg', size: 1, mtimeMs: 1 }, 'kept');
    await clock.advance(1);
    drive(journal, { path: '/photos/img_1.jpg.d/other.jpg', size: 1, mtimeMs: 1 }, 'failed');
    await clock.advance(1);
    const v1 = { path: '/photos/Urlaub/IMG_1.JPG', size: 2, mtimeMs: 2 };
    drive(journal, v1, 'settled');

    const exact = journal.history('/photos/Urlaub/IMG_1.JPG');
    expect(exact.map((h) => [h.file.path, h.file.state])).toEqual([
      ['/photos/Urlaub/IMG_1.JPG', 'settled'],
      ['/photos/Urlaub/IMG_1.JPG', 'archived'],
    ]);
    expect(exact[1]?.transitions.map((t) => t.state)).toEqual(ROUTE.archived);

    expect(journal.history('img_1.jpg').map((h) => h.file.path)).toEqual([
      '/photos/Urlaub/IMG_1.JPG',
      '/photos/Ürlaub 2/img_1.jpg',
      '/photos/Urlaub/IMG_1.JPG',
      '/photos/img_1.jpg.d/other.jpg',
    ]);
    expect(journal.history('ürlaub').map((h) => h.file.path)).toEqual(['/photos/Ürlaub 2/img_1.jpg']);
    expect(journal.history('URLAUB/')).toHaveLength(2);
    expect(journal.history('nothing-like-this')).toEqual([]);
    expect(journal.history('  ')).toEqual([]);
    expect(journal.history('%')).toEqual([]);
    expect(journal.history('photos', 2)).toHaveLength(2);
  });

  it('history() finds a file by where it is in the archive, or by its asset id', () => {
    const journal = open();
    const file = { path: '/photos/trip/IMG_1.jpg', size: 1, mtimeMs: 1 };
    for (const state of ['discovered', 'settled', 'hashed', 'uploading'] as const) journal.record(file, state);
    journal.record(file, 'on-server', { assetId: '3f2c9e0a-asset', serverStatus: 'created' });
    journal.record(file, 'archiving', { archivePath: '/archive/trip/IMG_1 (1).jpg' });
    journal.record(file, 'archived', { archivePath: '/archive/trip/IMG_1 (1).jpg' });
    drive(journal, { path: '/photos/other.jpg', size: 1, mtimeMs: 1 }, 'archived');
    for (const query of ['/archive/trip/IMG_1 (1).jpg', 'img_1 (1).JPG', 'archive/trip', '3f2c9e0a-asset']) {
      expect(journal.history(query).map((h) => h.file.path), query).toEqual([file.path]);
    }
    expect(journal.history('3f2c9e0a')).toEqual([]);
  });

  it('history() is capped at 50 by default', () => {
    const journal = open();
    for (let i = 0; i < 60; i++) journal.record({ path: `/w/${i}.jpg`, size: 1, mtimeMs: 1 }, 'discovered');
    expect(journal.history('/w/')).toHaveLength(50);
  });
});

describe('open()', () => {
  it('creates a WAL journal at the newest schema, private to its owner', async () => {
    const journal = open();
    journal.record({ path: '/a', size: 1, mtimeMs: 1 }, 'discovered');
    expect((await stat(stateDir())).mode & 0o777).toBe(0o700);
    for (const name of [JOURNAL_FILE, `${JOURNAL_FILE}-wal`, `${JOURNAL_FILE}-shm`]) {
      expect((await stat(join(stateDir(), name))).mode & 0o777, name).toBe(0o600);
    }
    journal.close();
    withRaw(dbFile(), (db) => {
      expect(db.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
      expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    });
    expect(SCHEMA_VERSION).toBe(3);
  });

  it('tightens the modes of an existing directory and journal', async () => {
    open().close();
    await chmod(stateDir(), 0o755);
    await chmod(dbFile(), 0o644);
    open();
    expect((await stat(stateDir())).mode & 0o777).toBe(0o700);
    expect((await stat(dbFile())).mode & 0o777).toBe(0o600);
  });

  it('leaves a shared sticky directory (like /tmp) as it is, but still makes its files private', async () => {
    const shared = join(dir.path, 'shared');
    await mkdir(shared);
    await chmod(shared, 0o1777);
    open(shared);
    expect((await stat(shared)).mode & 0o7777).toBe(0o1777);
    expect((await stat(join(shared, JOURNAL_FILE))).mode & 0o777).toBe(0o600);
  });

  it('keeps its rows across close and reopen', () => {
    const journal = open();
    journal.record({ path: '/a', size: 1, mtimeMs: 1 }, 'discovered');
    journal.close();
    expect(open().current('/a')?.state).toBe('discovered');
  });

  it('refuses a state directory that is a file', async () => {
    const file = join(dir.path, 'not-a-dir');
    await writeFile(file, 'x');
    expect(thrownBy(JournalError, () => open(file)).kind).toBe('unusable');
  });
});

describe('schema migrations', () => {
  async function v1Journal(): Promise<void> {
    await mkdir(stateDir(), { recursive: true });
    const sql = await readFile(FIXTURE_V1, 'utf8');
    withRaw(dbFile(), (db) => {
      db.exec(sql);
      db.pragma('user_version = 1');
    });
  }

  it('upgrades a v1 journal, keeping its rows and giving each a first transition', async () => {
    await v1Journal();
    withRaw(dbFile(), (db) => expect(db.pragma('user_version', { simple: true })).toBe(1));
    const journal = open();
    expect(logLines.find((line) => line.level === 30)).toMatchObject({ from: 1, to: 3 });
    expect(journal.current('/watch/broken.mov')).toMatchObject({
      id: 3,
      state: 'failed',
      error: 'HTTP 400 from POST /api/assets: bad file',
      attempts: 0,
      nextRetryAt: null,
      serverStatus: null,
      createdAt: 1704067202000,
      updatedAt: 1704067202000,
    });
    const archived = journal.findFinal('/watch/2023/IMG_0001.jpg', 2048576, 1685577600123.25);
    expect(archived).toMatchObject({ id: 1, state: 'archived', assetId: 'asset-1', archivePath: '/archive/2023/IMG_0001.jpg' });
    expect(journal.unfinished().map((row) => row.id)).toEqual([2, 5]);
    expect(journal.failed().map((row) => row.id)).toEqual([3]);
    expect(journal.history('/watch/2023/IMG_0001.jpg').map((h) => [h.file.id, h.transitions])).toEqual([
      [5, [{ state: 'discovered', at: 1704067300000, detail: { migratedFrom: 1 } }]],
      [1, [{ state: 'archived', at: 1704067200000, detail: { migratedFrom: 1 } }]],
    ]);
    // The upgraded journal works like a new one.
    journal.record({ path: '/watch/2023/IMG_0002.HEIC', size: 3145728, mtimeMs: 1685577601000 }, 'kept');
    expect(journal.current('/watch/2023/IMG_0002.HEIC')).toMatchObject({ id: 2, state: 'kept', assetId: 'asset-2' });
    journal.close();
    withRaw(dbFile(), (db) => {
      expect(db.pragma('user_version', { simple: true })).toBe(3);
      expect(db.prepare('SELECT COUNT(*) AS n FROM files').get()).toEqual({ n: 5 });
      const indexes = (db.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL").all() as Array<{ name: string }>).map((r) => r.name);
      expect(indexes.sort()).toEqual(['files_failed', 'files_final_updated_at', 'files_path', 'files_version', 'transitions_file']);
    });
  });

  it('v3 indexes only the failed rows and the final rows, and the queries that need them use them', () => {
    open().close();
    withRaw(dbFile(), (db) => {
      const plan = (sql: string): string =>
        (db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all() as Array<{ detail: string }>).map((row) => row.detail).join('; ');
      // recent() and failed() ask exactly this; a partial index is used only for a WHERE that implies its own.
      expect(plan(`SELECT id FROM files WHERE ${IS_FINAL} ORDER BY updated_at DESC, id DESC LIMIT 5`)).toBe(
        'SCAN files USING INDEX files_final_updated_at',
      );
      expect(plan("SELECT id FROM files WHERE state = 'failed' ORDER BY id")).toContain('INDEX files_failed');
    });
  });

  it('runs each step in its own transaction: a failing step leaves the previous version intact', () => {
    withRaw(join(dir.path, 'm.db'), (db) => {
      const broken: Migration[] = [
        MIGRATIONS[0] as Migration,
        {
          version: 2,
          description: 'fails half-way',
          up: (inner) => {
            inner.exec('CREATE TABLE half (x)');
            throw new Error('boom');
          },
        },
      ];
      expect(() => migrate(db, 'm.db', broken)).toThrow('boom');
      expect(db.pragma('user_version', { simple: true })).toBe(1);
      expect(db.prepare("SELECT name FROM sqlite_master WHERE name = 'half'").get()).toBeUndefined();
      expect(migrate(db, 'm.db')).toEqual([2, 3]);
      expect(migrate(db, 'm.db')).toEqual([]);
    });
  });

  it('refuses a journal from a newer release and leaves it byte for byte', async () => {
    await mkdir(stateDir(), { recursive: true });
    withRaw(dbFile(), (db) => {
      db.exec('CREATE TABLE future (x); INSERT INTO future VALUES (1);');
      db.pragma('user_version = 99');
    });
    const before = await readFile(dbFile());
    const error = thrownBy(JournalError, () => open());
    expect(error.kind).toBe('newer-schema');
    expect(error.message).toContain('schema version 99');
    expect(error.message).toContain(`up to version ${SCHEMA_VERSION}`);
    expect(error.message).toContain('upgrade immich-auto-uploader');
    expect(error.message).toContain('STATE_DIRECTORY');
    expect(thrownBy(JournalError, () => Journal.openReadOnly(stateDir())).kind).toBe('newer-schema');
    expect((await readFile(dbFile())).equals(before)).toBe(true);
    expect(await readdir(stateDir())).toEqual([JOURNAL_FILE]);
  });
});

describe('a damaged journal', () => {
  it('a file of random bytes is moved aside with its WAL, with a warning, and a new journal starts', async () => {
    await mkdir(stateDir(), { recursive: true });
    await writeFile(dbFile(), randomBytes(64 * 1024));
    await writeFile(`${dbFile()}-wal`, randomBytes(4096));
    const journal = open();
    const stamp = new Date(clock.now()).toISOString().replaceAll(':', '-');
    const aside = `${JOURNAL_FILE}.corrupt-${stamp}`;
    const names = await readdir(stateDir());
    expect(names).toEqual(expect.arrayContaining([aside, `${aside}-wal`, JOURNAL_FILE]));

    const warning = logLines.find((line) => line.level === 40);
    expect(warning).toMatchObject({ file: dbFile(), movedTo: join(stateDir(), aside) });
    expect(warning?.msg).toContain(join(stateDir(), aside));
    expect(warning?.msg).toContain("server's duplicate check");

    journal.record({ path: '/a', size: 1, mtimeMs: 1 }, 'discovered');
    expect(journal.current('/a')?.state).toBe('discovered');
  });

  it('a journal whose pages are damaged fails quick_check and is moved aside', async () => {
    open().close();
    withRaw(dbFile(), (db) => {
      db.exec('CREATE TABLE padding (x TEXT)');
      const insert = db.prepare('INSERT INTO padding VALUES (?)');
      for (let i = 0; i < 500; i++) insert.run('x'.repeat(200));
      db.pragma('wal_checkpoint(TRUNCATE)');
      db.pragma('journal_mode = DELETE');
    });
    const bytes = await readFile(dbFile());
    const pageSize = 4096;
    expect(bytes.length).toBeGreaterThan(pageSize * 10);
    randomBytes(pageSize * 3).copy(bytes, pageSize * 5); // pages 6-8: table data, not the header
    await writeFile(dbFile(), bytes);

    const journal = open();
    expect((await readdir(stateDir())).some((name) => name.startsWith(`${JOURNAL_FILE}.corrupt-`))).toBe(true);
    expect(logLines.some((line) => line.level === 40)).toBe(true);
    expect(journal.counts().discovered).toBe(0);
  });
});

describe('openReadOnly()', () => {
  it('returns undefined where there is no journal, and creates nothing', async () => {
    expect(Journal.openReadOnly(stateDir())).toBeUndefined();
    await mkdir(stateDir());
    expect(Journal.openReadOnly(stateDir())).toBeUndefined();
    expect(await readdir(stateDir())).toEqual([]);
  });

  it('refuses an old journal instead of migrating it', async () => {
    await mkdir(stateDir(), { recursive: true });
    withRaw(dbFile(), (db) => {
      migrate(db, dbFile(), MIGRATIONS.slice(0, 1));
    });
    const error = thrownBy(JournalError, () => Journal.openReadOnly(stateDir()));
    expect(error.kind).toBe('unusable');
    expect(error.message).toContain('start the daemon');
    withRaw(dbFile(), (db) => expect(db.pragma('user_version', { simple: true })).toBe(1));
  });
});
