import { mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { pino, type Logger } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Coordinator } from '../../src/pipeline/coordinator.js';
import type { FileOutcome } from '../../src/pipeline/process-file.js';
import { makeRecorder } from '../../src/pipeline/states.js';
import type { Candidate, SettledFile } from '../../src/pipeline/types.js';
import { systemClock, type Clock } from '../../src/support/clock.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { makeTempDir } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait-for.js';

let temp: Awaited<ReturnType<typeof makeTempDir>>;
let coordinator: Coordinator;
/** Finishes the processing of a file (by path) with an upload. */
const finish = new Map<string, () => void>();
/** Every file handed to processing, in order. */
const processed: SettledFile[] = [];

beforeEach(async () => {
  temp = await makeTempDir();
  finish.clear();
  processed.length = 0;
  coordinator = coordinatorFor(pino({ level: 'silent' }), (file) => {
    processed.push(file);
    return new Promise<FileOutcome>((resolve) =>
      finish.set(file.path, () => resolve({ kind: 'uploaded', assetId: 'a', disposition: { mode: 'keep' }, ms: 1 })),
    );
  });
  coordinator.start();
});

/** A coordinator with a small scale, whose files end as `process` says; `more` sets other dependencies. */
function coordinatorFor(
  logger: Logger,
  process: (file: SettledFile) => Promise<FileOutcome>,
  onOriginalGone?: (file: Candidate) => void,
  retryFailed = false,
  more: Partial<ConstructorParameters<typeof Coordinator>[0]> = {},
): Coordinator {
  return new Coordinator({
    clock: systemClock,
    logger,
    waitMs: 0,
    intervalMs: 20,
    inFlight: 8,
    maxInProgress: 3,
    retryFailed,
    process,
    record: makeRecorder(
      () => Promise.resolve(),
      () => undefined,
    ),
    onFatal: (error) => {
      throw error;
    },
    onOriginalGone,
    ...more,
  });
}

afterEach(async () => {
  const stopping = coordinator.stop();
  // stop() waits for the files being processed: finish them.
  for (const done of finish.values()) done();
  await stopping;
  await temp.remove();
});

async function offerFile(name: string): Promise<string> {
  return offerTo(coordinator, name);
}

/** Writes a file named `name` and offers it to `to`, as the detector would. */
async function offerTo(to: Coordinator, name: string): Promise<string> {
  const path = join(temp.path, name);
  await writeFile(path, name);
  const candidate: Candidate = { path, root: { path: temp.path, archivePath: join(temp.path, 'archive') }, size: name.length, mtimeMs: 0 };
  to.offer(candidate);
  return path;
}

describe('Coordinator.room', () => {
  it('holds a scan while maxInProgress files are in progress, and lets it on when one is done', async () => {
    const never = new AbortController().signal;
    await coordinator.room(never);
    const paths = [await offerFile('a.jpg'), await offerFile('b.jpg'), await offerFile('c.jpg')];
    let roomMade = false;
    const waiting = coordinator.room(never).then(() => (roomMade = true));
    // The three are being processed (not merely offered) and the scan still waits.
    await waitFor(() => paths.every((path) => finish.has(path)));
    expect(roomMade).toBe(false);
    finish.get(paths[0]!)?.();
    await waiting;
    expect(coordinator.queued).toBe(2);
  });

  it('stops holding when the scan is aborted or the coordinator stops', async () => {
    await Promise.all([offerFile('a.jpg'), offerFile('b.jpg'), offerFile('c.jpg')]);
    const scan = new AbortController();
    const aborted = coordinator.room(scan.signal);
    scan.abort();
    await aborted;
    const stopped = coordinator.room(new AbortController().signal);
    const stopping = coordinator.stop();
    await stopped;
    for (const done of finish.values()) done();
    await stopping;
    // A stopped coordinator never holds a scan.
    await coordinator.room(new AbortController().signal);
  });
});

describe('Coordinator.offer', () => {
  it('looks again, once a file is done, at a new version seen while it was being processed', async () => {
    const path = await offerFile('a.jpg');
    await waitFor(() => finish.has(path));
    // Another file takes the name meanwhile (a sync tool's rename over the original, say): the
    // archive leaves it alone, and it must not wait for the next rescan.
    await writeFile(path, 'a new version');
    coordinator.offer({ path, root: { path: temp.path, archivePath: join(temp.path, 'archive') }, size: 'a new version'.length, mtimeMs: 1 });
    expect(processed).toHaveLength(1);
    finish.get(path)?.();
    await waitFor(() => processed.length === 2, { message: 'the new version to be processed' });
    expect(processed[1]).toMatchObject({ path, size: 'a new version'.length });
  });
});

describe('Coordinator.onOriginalGone', () => {
  it('is told of each original moved or deleted, and of no other', async () => {
    const outcomes: Record<string, FileOutcome> = {
      'moved.jpg': { kind: 'uploaded', assetId: 'a', disposition: { mode: 'move', archivedTo: '/archive/moved.jpg' }, ms: 1 },
      'deleted.jpg': { kind: 'already-on-server', assetId: 'b', disposition: { mode: 'delete' }, ms: 1 },
      'kept.jpg': { kind: 'uploaded', assetId: 'c', disposition: { mode: 'keep' }, ms: 1 },
      'failed.jpg': { kind: 'failed', stage: 'upload', message: 'refused', retryable: false },
    };
    const gone: string[] = [];
    const told = coordinatorFor(
      pino({ level: 'silent' }),
      (file) => Promise.resolve(outcomes[file.path.slice(temp.path.length + 1)] ?? { kind: 'aborted' }),
      (file) => void gone.push(file.path.slice(temp.path.length + 1)),
    );
    told.start();
    for (const name of Object.keys(outcomes)) {
      await writeFile(join(temp.path, name), name);
      told.offer({ path: join(temp.path, name), root: { path: temp.path, archivePath: join(temp.path, 'archive') }, size: name.length, mtimeMs: 0 });
    }
    await waitFor(() => told.stats.snapshot(0).failed === 1 && told.queued === 0, { message: 'every file done' });
    await told.stop();
    expect(gone.sort()).toEqual(['deleted.jpg', 'moved.jpg']);
  });
});

describe('Coordinator: originals left in place', () => {
  it('warns once per folder that cannot be written to, reads its files no more, and sends them on once it can be written to', async () => {
    const lines: Array<{ level: number; msg: string }> = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as (typeof lines)[number]) });
    const fake = new FakeClock();
    let writable = false;
    const processed: string[] = [];
    const card = join(temp.path, 'card');
    const left = coordinatorFor(
      logger,
      (file) => {
        processed.push(basename(file.path));
        return Promise.resolve<FileOutcome>({
          kind: 'uploaded',
          assetId: 'a',
          disposition: writable ? { mode: 'move', archivedTo: join(temp.path, 'archive', basename(file.path)) } : { mode: 'left', folder: card, problem: 'is on a read-only file system' },
          ms: 1,
        });
      },
      undefined,
      true,
      { clock: fake, writable: () => Promise.resolve(writable) },
    );
    left.start();
    await mkdir(card);
    const files: Candidate[] = [];
    for (const name of ['a.jpg', 'b.jpg']) {
      await writeFile(join(card, name), 'x');
      const { mtimeMs } = await stat(join(card, name));
      files.push({ path: join(card, name), root: { path: temp.path, archivePath: join(temp.path, 'archive') }, size: 1, mtimeMs });
    }
    const seeAll = (): void => files.forEach((file) => left.offer(file));
    try {
      seeAll();
      await waitFor(async () => (await fake.advance(20), left.stats.snapshot(0).left === 2 && left.queued === 0), { message: 'both left in place' });
      expect(lines.filter((line) => line.level === 40).map((line) => line.msg)).toEqual([
        "the originals in card stay there: the folder is on a read-only file system (a card's lock switch, a read-only mount, its owner). " +
          'They are on the server, and go on as AFTER_UPLOAD says once it can be written to; set AFTER_UPLOAD=keep to leave such folders as they are',
      ]);
      expect(lines.filter((line) => line.msg.startsWith('uploaded card/a.jpg')).map((line) => line.msg)).toEqual([
        'uploaded card/a.jpg (1 B in 1 ms), left in place: its folder is on a read-only file system',
      ]);
      // A rescan sees them again, a while later: still read-only, they are not read again.
      await fake.advance(5_000);
      seeAll();
      await fake.advance(100);
      expect(left.queued).toBe(0);
      expect(processed.sort()).toEqual(['a.jpg', 'b.jpg']);
      // Writable now (the card's switch): the next rescan sends them on.
      writable = true;
      await fake.advance(5_000);
      seeAll();
      await waitFor(async () => (await fake.advance(20), left.stats.snapshot(0).uploaded === 4 && left.queued === 0), { message: 'both sent on' });
      expect(processed.sort()).toEqual(['a.jpg', 'a.jpg', 'b.jpg', 'b.jpg']);
      expect(left.stats.snapshot(0).left, 'none left in place now').toBe(0);
      expect(lines.map((line) => line.msg)).toContain('card can be written to now: the originals left there go on');
    } finally {
      await left.stop();
    }
  });
});

describe('Coordinator retries', () => {
  it('records a failed file removed meanwhile as gone at its retry, and no longer counts it', async () => {
    const gone: string[] = [];
    const failing = coordinatorFor(
      pino({ level: 'silent' }),
      () => Promise.resolve({ kind: 'failed', stage: 'upload', message: 'refused', retryable: false }),
      undefined,
      true,
      { record: makeRecorder(() => Promise.resolve(), (file, state) => void (state === 'gone' && gone.push(basename(file.path)))) },
    );
    failing.start();
    const path = await offerTo(failing, 'refused.txt');
    await waitFor(() => failing.stats.snapshot(0).failed === 1 && failing.queued === 0, { message: 'the file failed' });
    await rm(path);
    expect(failing.retryFailedNow()).toBe(1);
    await waitFor(() => failing.stats.snapshot(0).failed === 0, { message: 'no longer counted' });
    expect(gone).toEqual(['refused.txt']);
    await failing.stop();
  });


  it('stops trying on a timer a file whose upload fails at every try, after the tries allowed, saying the same failure once', async () => {
    const fake = new FakeClock();
    const lines: Array<{ level: number; msg: string }> = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as (typeof lines)[number]) });
    let tries = 0;
    const failing = coordinatorFor(
      logger,
      // Immich logs each try under an id of its own.
      () =>
        Promise.resolve<FileOutcome>(
          (tries++, { kind: 'failed', stage: 'upload', message: 'POST /api/assets answered 500: Internal Server Error', retryable: true, loggedAs: `id-${tries}` }),
        ),
      undefined,
      true,
      { clock: fake, intervalMs: 1_000, maxUploadTries: 3 },
    );
    failing.start();
    try {
      await offerTo(failing, 'poison.jpg');
      // Tries after 0, 1 and 3 minutes; then none, however long.
      await waitFor(async () => (await fake.advance(1_000), tries === 3 && failing.queued === 0), { timeoutMs: 20_000, message: 'three tries' });
      await fake.advance(3 * 60 * 60_000);
      expect(tries).toBe(3);
      // The same failure again is no news: said at the first try, and when the tries end.
      expect(lines.filter((line) => line.level === 50).map((line) => line.msg)).toEqual([
        "failed poison.jpg: POST /api/assets answered 500: Internal Server Error (in Immich's log as id-1)",
        "failed poison.jpg: POST /api/assets answered 500: Internal Server Error (in Immich's log as id-3); tried 3 times: tried again when it changes, after a restart, or with `retry`",
      ]);
      expect(failing.retryFailedNow()).toBe(1);
      await waitFor(async () => (await fake.advance(1_000), tries === 4), { timeoutMs: 20_000, message: 'the try asked for' });
      // A try asked for (`retry`) is news again.
      await waitFor(() => lines.filter((line) => line.level === 50).length === 3, { message: 'the failure of the try asked for' });
    } finally {
      await failing.stop();
    }
  });

  it('keeps many failed files waiting for their retry without a listener warning', async () => {
    // Hundreds of files fail at once when the journal's disk is full or the server refuses them
    // all: each waits for its retry, and Node warned of a "possible memory leak" past ten.
    const warnings: string[] = [];
    const onWarning = (warning: Error): void => void warnings.push(warning.name);
    process.on('warning', onWarning);
    try {
      const failing = coordinatorFor(
        pino({ level: 'silent' }),
        () => Promise.resolve({ kind: 'failed', stage: 'archive', message: 'disk full', retryable: true }),
        undefined,
        true,
      );
      failing.start();
      for (let i = 0; i < 30; i++) {
        const path = join(temp.path, `f${i}.jpg`);
        await writeFile(path, 'x');
        failing.offer({ path, root: { path: temp.path, archivePath: join(temp.path, 'archive') }, size: 1, mtimeMs: 0 });
      }
      await waitFor(() => failing.stats.snapshot(0).failed === 30, { message: 'every file failed' });
      await new Promise((resolve) => setImmediate(resolve));
      await failing.stop();
    } finally {
      process.off('warning', onWarning);
    }
    expect(warnings).toEqual([]);
  });

  it('retries a failed file when its timer fires a moment before its time, as timers do', async () => {
    const fake = new FakeClock();
    // A timer counts from the event loop's cached time: it may end before the clock reaches its
    // time. (Only long waits here: a loop's short ones would spin at 0 ms.)
    const clock: Clock = { now: () => fake.now(), monotonic: () => fake.monotonic(), sleep: (ms, signal) => fake.sleep(ms >= 1_000 ? ms - 1 : ms, signal) };
    let calls = 0;
    const retrying = new Coordinator({
      clock,
      logger: pino({ level: 'silent' }),
      waitMs: 0,
      intervalMs: 20,
      inFlight: 8,
      maxInProgress: 3,
      retryFailed: true,
      process: () =>
        Promise.resolve<FileOutcome>(
          ++calls === 1
            ? { kind: 'failed', stage: 'archive', message: 'disk full', retryable: true }
            : { kind: 'uploaded', assetId: 'a', disposition: { mode: 'keep' }, ms: 1 },
        ),
      record: makeRecorder(
        () => Promise.resolve(),
        () => undefined,
      ),
      onFatal: (error) => {
        throw error;
      },
    });
    retrying.start();
    try {
      const path = join(temp.path, 'a.jpg');
      await writeFile(path, 'x');
      retrying.offer({ path, root: { path: temp.path, archivePath: join(temp.path, 'archive') }, size: 1, mtimeMs: 0 });
      await waitFor(async () => (await fake.advance(20), calls === 1), { message: 'the first try' });
      // The first retry comes a minute later; time moves a millisecond at a time towards it, so
      // that the timer ends before the retry's time, and nothing but the timer offers the file.
      await fake.advance(59_000);
      expect(retrying.stats.snapshot(0).failed).toBe(1);
      await waitFor(async () => (await fake.advance(1), calls === 2 && retrying.queued === 0), { intervalMs: 1, timeoutMs: 20_000, message: 'the retry' });
      expect(retrying.stats.snapshot(0)).toMatchObject({ uploaded: 1, failed: 0 });
    } finally {
      await retrying.stop();
    }
  });

  it('tries the files waiting for a retry of one step at once when asked (the archive is back), not those refused or failed elsewhere', async () => {
    const tries = new Map<string, number>();
    const failures: Record<string, FileOutcome> = {
      'waits.jpg': { kind: 'failed', stage: 'archive', message: 'no', retryable: true },
      'refused.jpg': { kind: 'failed', stage: 'archive', message: 'no', retryable: false },
      'server.jpg': { kind: 'failed', stage: 'upload', message: 'no', retryable: true },
    };
    const failing = coordinatorFor(
      pino({ level: 'silent' }),
      (file) => {
        tries.set(basename(file.path), (tries.get(basename(file.path)) ?? 0) + 1);
        return Promise.resolve(failures[basename(file.path)] ?? { kind: 'skipped', reason: 'unexpected' });
      },
      undefined,
      true,
    );
    failing.start();
    const root = { path: temp.path, archivePath: join(temp.path, 'archive') };
    for (const name of Object.keys(failures)) {
      const path = join(temp.path, name);
      await writeFile(path, 'x');
      failing.offer({ path, root, size: 1, mtimeMs: 0 });
    }
    await waitFor(() => failing.stats.snapshot(0).failed === 3, { message: 'all failed' });
    expect(failing.retryWaitingNow('archive')).toBe(1);
    await waitFor(() => tries.get('waits.jpg') === 2 && failing.queued === 0, { message: 'waits.jpg tried again' });
    expect(failing.stats.snapshot(0).failed, 'files failed, not tries').toBe(3);
    expect(tries.get('refused.jpg')).toBe(1);
    expect(tries.get('server.jpg')).toBe(1);
    await failing.stop();
  });
});

describe('Coordinator logging', () => {
  it('warns when a sidecar did not go with its photo, or could not follow it into the archive', async () => {
    const lines: Array<{ level: number; msg: string; sidecarsLeft?: string }> = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as (typeof lines)[number]) });
    const warned = coordinatorFor(logger, () =>
      Promise.resolve<FileOutcome>({
        kind: 'uploaded',
        assetId: 'a',
        disposition: { mode: 'move', archivedTo: join(temp.path, 'archive', 'd.jpg'), sidecarsLeft: 'd.jpg.xmp: EIO' },
        ms: 1,
        sidecarNotSent: 'd.jpg.xmp was not sent with it: it is over 4 MB',
      }),
    );
    warned.start();
    const path = join(temp.path, 'd.jpg');
    await writeFile(path, 'd');
    warned.offer({ path, root: { path: temp.path, archivePath: join(temp.path, 'archive') }, size: 1, mtimeMs: 0 });
    await waitFor(() => lines.filter((line) => line.level === 40).length === 2, { message: 'the warnings' });
    await warned.stop();
    expect(lines.filter((line) => line.level === 40)).toMatchObject([
      { msg: 'the sidecar of d.jpg: d.jpg.xmp was not sent with it: it is over 4 MB' },
      { msg: 'a sidecar of d.jpg stays in the watch folder: d.jpg.xmp: EIO', sidecarsLeft: 'd.jpg.xmp: EIO' },
    ]);
    expect(lines.some((line) => line.level === 30 && line.msg.startsWith('uploaded d.jpg'))).toBe(true);
  });

  it('warns when a file was written to again after its upload, and looks at it again', async () => {
    const lines: Array<{ level: number; msg: string; assetId?: string }> = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as (typeof lines)[number]) });
    let tries = 0;
    const rewritten = coordinatorFor(logger, () =>
      Promise.resolve<FileOutcome>(++tries === 1 ? { kind: 'changed', uploadedAs: 'asset-1' } : { kind: 'skipped', reason: 'seen again' }),
    );
    rewritten.start();
    const path = join(temp.path, 'scan.jpg');
    await writeFile(path, 'half');
    rewritten.offer({ path, root: { path: temp.path, archivePath: join(temp.path, 'archive') }, size: 4, mtimeMs: 0 });
    await waitFor(() => tries === 2, { message: 'the file looked at again' });
    await rewritten.stop();
    expect(lines.filter((line) => line.level === 40)).toMatchObject([
      {
        assetId: 'asset-1',
        msg:
          'scan.jpg was written to again after it was uploaded: it goes round again. The server keeps what it got first (asset asset-1): if that is ' +
          'incomplete, delete it in Immich. A program paused while writing the file for longer than FILE_STABILITY_WAIT_SECONDS=0: raise it',
      },
    ]);
  });

  it('says without a warning that a file was replaced by another after its upload: the server got the whole first one', async () => {
    const lines: Array<{ level: number; msg: string }> = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as (typeof lines)[number]) });
    let tries = 0;
    const replaced = coordinatorFor(logger, () =>
      Promise.resolve<FileOutcome>(++tries === 1 ? { kind: 'changed', uploadedAs: 'asset-1', replaced: true } : { kind: 'skipped', reason: 'seen again' }),
    );
    replaced.start();
    const path = join(temp.path, 'sync.jpg');
    await writeFile(path, 'new');
    replaced.offer({ path, root: { path: temp.path, archivePath: join(temp.path, 'archive') }, size: 3, mtimeMs: 0 });
    await waitFor(() => tries === 2, { message: 'the file looked at again' });
    await replaced.stop();
    expect(lines.filter((line) => line.level >= 40)).toEqual([]);
    expect(lines.map((line) => line.msg)).toContain(
      'sync.jpg was replaced by another file after it was uploaded (Immich keeps the one before, asset asset-1): the new one goes round',
    );
  });
});

describe('Coordinator: what it says of a file the server had', () => {
  it('says, in the one line, that the sidecar archived with it did not go to Immich', async () => {
    const lines: Array<{ level: number; msg: string }> = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as (typeof lines)[number]) });
    const archivedTo = join(temp.path, 'archive', 'again.jpg');
    const had = coordinatorFor(logger, () =>
      Promise.resolve<FileOutcome>({ kind: 'already-on-server', assetId: 'asset-1', disposition: { mode: 'move', archivedTo }, ms: 1, sidecarNotSent: true }),
    );
    had.start();
    await offerTo(had, 'again.jpg');
    await waitFor(() => lines.some((line) => line.msg.startsWith('already on server')), { message: 'the line about the file' });
    await had.stop();
    expect(lines.filter((line) => line.level >= 40)).toEqual([]);
    expect(lines.map((line) => line.msg)).toContain('already on server: again.jpg, archived; its sidecar did not go to Immich, which had the photo already');
  });
});
