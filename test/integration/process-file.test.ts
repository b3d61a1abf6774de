import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { appendFile, mkdir, rename, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import PQueue from 'p-queue';
import { pino } from 'pino';
import { afterAll, afterEach, beforeEach, describe, expect, it, onTestFinished } from 'vitest';
import { createImmichClient } from '../../src/immich/http-client.js';
import type { ImmichClient } from '../../src/immich/client.js';
import { ResilientImmich, ServerGate } from '../../src/immich/resilient.js';
import { CheckBatcher } from '../../src/pipeline/check.js';
import { processFile, type ProcessDeps } from '../../src/pipeline/process-file.js';
import { SIDECAR_MAX_BYTES } from '../../src/pipeline/sidecar.js';
import { buildUploadRequest } from '../../src/pipeline/upload.js';
import { makeRecorder, type FileState, type RecordDetails } from '../../src/pipeline/states.js';
import type { SettledFile } from '../../src/pipeline/types.js';
import { systemClock } from '../../src/support/clock.js';
import { FsWorker } from '../../src/support/fs-worker.js';
import { limitWhileWaiting } from '../../src/support/limit.js';
import type { RetryPolicy } from '../../src/support/retry.js';
import { startFakeImmich, type FakeImmich } from '../fakes/immich-server.js';
import { readIfExists, sha1, writeMedia } from '../helpers/media.js';
import { makeTempDir } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait-for.js';

let temp: { path: string; remove: () => Promise<void> };
const files = new FsWorker();
afterAll(() => files.close());
let server: FakeImmich;
let client: ImmichClient;
let watchDir: string;
let archiveDir: string;
const states: FileState[] = [];

beforeEach(async () => {
  temp = await makeTempDir();
  watchDir = join(temp.path, 'in');
  archiveDir = join(temp.path, 'out');
  await mkdir(watchDir);
  server = await startFakeImmich({ major: 3 });
  client = createImmichClient({ apiUrl: server.apiUrl, apiKey: 'test-key' });
  states.length = 0;
});

afterEach(async () => {
  client.close();
  await server.close();
  await temp.remove();
});

function deps(policy?: RetryPolicy): ProcessDeps {
  const logger = pino({ level: 'silent' });
  const stop = new AbortController();
  const gate = new ServerGate({ client, clock: systemClock, logger, signal: stop.signal });
  const immich = new ResilientImmich({ client, gate, clock: systemClock, logger, ...(policy ? { policy } : {}) });
  const signals = {};
  const queue = new PQueue({ concurrency: 2 });
  return {
    immich,
    checker: new CheckBatcher({ send: (items) => immich.bulkUploadCheck(items, signals), clock: systemClock }),
    serverMajor: () => 3,
    afterUpload: 'move',
    clock: systemClock,
    files,
    hashing: files,
    limitHash: (work) => queue.add(work),
    limitUpload: (work) => queue.add(work),
    // Every state is "committed" at once; a write-ahead caller gets a resolved promise.
    record: async (_file, state) => void states.push(state),
    signals,
  };
}

async function settled(name: string): Promise<SettledFile> {
  const path = join(watchDir, name);
  const info = await stat(path);
  return {
    path,
    root: { path: watchDir, archivePath: archiveDir },
    size: info.size,
    mtimeMs: info.mtimeMs,
    birthtimeMs: info.birthtimeMs,
    identity: { ino: info.ino, dev: info.dev },
  };
}

describe('processFile', () => {
  it('uploads, then archives, recording each state before the step that depends on it', async () => {
    const files = await writeMedia(watchDir, ['a.jpg']);
    const outcome = await processFile(await settled('a.jpg'), deps());
    expect(outcome.kind).toBe('uploaded');
    expect(states).toEqual(['settled', 'hashed', 'uploading', 'on-server', 'archiving', 'archived']);
    expect(sha1((await readIfExists(join(archiveDir, 'a.jpg'))) ?? Buffer.alloc(0))).toBe(sha1(files.get('a.jpg') ?? Buffer.alloc(1)));
  });

  it('does not archive a file that changed during its upload: it goes round again', async () => {
    await writeMedia(watchDir, ['b.jpg'], 64 * 1024);
    server.delayNext(1, 1_500, { path: '/api/assets', exact: true });
    const file = await settled('b.jpg');
    const running = processFile(file, deps());
    await waitFor(() => states.includes('hashed'), { message: 'hashing to finish' });
    await appendFile(file.path, 'edited while uploading');
    const outcome = await running;
    // The server has the version before the edit, from this upload: the coordinator warns of it.
    expect(server.assets).toHaveLength(1);
    expect(outcome).toEqual({ kind: 'changed', uploadedAs: server.assets[0]?.id });
    expect(await readIfExists(join(archiveDir, 'b.jpg'))).toBeUndefined();
    expect(await readIfExists(file.path)).toBeDefined();
  });

  for (const afterUpload of ['move', 'delete'] as const) {
    it(`${afterUpload} mode: leaves another file of the same size and mtime renamed over the original during its upload, which goes round`, async () => {
      const [original, replacement] = [randomBytes(64 * 1024), randomBytes(64 * 1024)];
      await writeFile(join(watchDir, 'IMG.jpg'), original);
      server.delayNext(1, 1_500, { path: '/api/assets', exact: true });
      const file = await settled('IMG.jpg');
      const running = processFile(file, { ...deps(), afterUpload });
      await waitFor(() => states.includes('uploading'), { message: 'the upload to start' });
      // A sync tool's new version, its times kept (cp -p, rsync -a, exiftool -P).
      const incoming = join(watchDir, '.IMG.jpg.sync');
      await writeFile(incoming, replacement);
      // To the nanosecond, as utimes() from a double in ms cannot.
      execFileSync('touch', ['-r', file.path, incoming]);
      expect((await stat(incoming)).mtimeMs).toBe(file.mtimeMs);
      await rename(incoming, file.path);
      const outcome = await running;
      // Not a write that paused: the server got the whole original.
      expect(outcome).toEqual({ kind: 'changed', uploadedAs: server.assets[0]?.id, replaced: true });
      expect(server.assets.map((asset) => asset.checksum)).toEqual([sha1(original)]);
      expect(await readIfExists(file.path)).toEqual(replacement);
      expect(await readIfExists(join(archiveDir, 'IMG.jpg'))).toBeUndefined();
    });
  }

  for (const afterUpload of ['move', 'delete'] as const) {
    it(`${afterUpload} mode: takes care of an unchanged file whose inode was numbered anew (FAT, exFAT), by its bytes`, async () => {
      const files = await writeMedia(watchDir, ['card.jpg']);
      const file = { ...(await settled('card.jpg')), identity: { ino: 1, dev: 1 } };
      const outcome = await processFile(file, { ...deps(), afterUpload });
      expect(outcome.kind).toBe('uploaded');
      expect(await readIfExists(file.path)).toBeUndefined();
      if (afterUpload === 'move') expect(await readIfExists(join(archiveDir, 'card.jpg'))).toEqual(files.get('card.jpg'));
    });
  }

  it('names no upload when a file changed after a check found it on the server, or was removed after its upload', async () => {
    const files = await writeMedia(watchDir, ['had.jpg', 'removed.jpg']);
    server.seedAsset({ checksum: sha1(files.get('had.jpg') ?? Buffer.alloc(0)) });
    const changeAt = (state: string, change: (path: string) => Promise<void>): ProcessDeps => {
      const base = deps();
      const record = makeRecorder(
        async (file, recorded, details) => {
          await base.record(file, recorded, details);
          if (recorded === state) await change(file.path);
        },
        (file, recorded, details) => base.record(file, recorded, details),
      );
      return { ...base, record };
    };
    const had = await processFile(await settled('had.jpg'), changeAt('archiving', (path) => appendFile(path, 'edited')));
    expect(had).toEqual({ kind: 'changed' });
    const removed = await processFile(await settled('removed.jpg'), changeAt('archiving', (path) => rm(path)));
    expect(removed).toEqual({ kind: 'changed' });
    expect(server.uploadCount).toBe(1);
  });

  it('fails a file the server refuses, leaving it in place', async () => {
    await writeMedia(watchDir, ['c.txt']);
    const outcome = await processFile(await settled('c.txt'), deps());
    expect(outcome).toMatchObject({ kind: 'failed', stage: 'upload', retryable: false });
    expect(outcome.kind === 'failed' && outcome.message).toContain('Unsupported file type');
    expect(await readIfExists(join(watchDir, 'c.txt'))).toBeDefined();
  });

  it("names where Immich's log has a failure of its own", async () => {
    const files = await writeMedia(watchDir, ['d.jpg']);
    server.failUploadsOf(sha1(files.get('d.jpg') ?? Buffer.alloc(0)), 500);
    const outcome = await processFile(await settled('d.jpg'), deps({ maxAttempts: 1, baseDelayMs: 1, maxDelayMs: 1 }));
    // Apart from the message, which is the same at each try (a failure said once).
    expect(outcome.kind === 'failed' && [outcome.message, outcome.loggedAs]).toEqual([expect.stringMatching(/^POST \/api\/assets answered 500: /) as string, expect.stringMatching(/^[\w-]+$/) as string]);
  });

  it('archives without uploading what the server already has', async () => {
    const files = await writeMedia(watchDir, ['d.jpg']);
    server.seedAsset({ checksum: sha1(files.get('d.jpg') ?? Buffer.alloc(0)), filename: 'd.jpg' });
    const outcome = await processFile(await settled('d.jpg'), deps());
    expect(outcome.kind).toBe('already-on-server');
    expect(states).toEqual(['settled', 'hashed', 'on-server', 'archiving', 'archived']);
    expect(server.uploadCount).toBe(0);
  });

  it('in delete mode keeps a file the server has only in its trash, and says so; a move goes on', async () => {
    const files = await writeMedia(watchDir, ['t.jpg', 'u.jpg']);
    for (const name of ['t.jpg', 'u.jpg']) server.seedAsset({ checksum: sha1(files.get(name) ?? Buffer.alloc(0)), trashed: true });
    const kept = await processFile(await settled('t.jpg'), { ...deps(), afterUpload: 'delete' });
    expect(kept).toMatchObject({ kind: 'failed', stage: 'check', retryable: true });
    expect(kept.kind === 'failed' && kept.message).toContain('only in its trash');
    expect(await readIfExists(join(watchDir, 't.jpg'))).toEqual(files.get('t.jpg'));
    expect(states).toEqual(['settled', 'hashed']);
    // A move keeps the original in the archive all the same.
    expect(await processFile(await settled('u.jpg'), deps())).toMatchObject({ kind: 'already-on-server', inTrash: true });
    expect(await readIfExists(join(archiveDir, 'u.jpg'))).toEqual(files.get('u.jpg'));
    expect(server.uploadCount).toBe(0);
  });
});

describe("processFile sends a photo's XMP sidecar with it", () => {
  /** What was recorded with 'on-server'. */
  const recordedWith = (run: ProcessDeps): { deps: ProcessDeps; onServer: () => RecordDetails | undefined } => {
    let details: RecordDetails | undefined;
    const record = makeRecorder(
      async (_file, state) => void states.push(state),
      (_file, state, more) => {
        states.push(state);
        if (state === 'on-server') details = more;
      },
    );
    return { deps: { ...run, record }, onServer: () => details };
  };
  const version = async (name: string): Promise<{ path: string; size: number; mtimeMs: number }> => {
    const info = await stat(join(watchDir, name));
    return { path: join(watchDir, name), size: info.size, mtimeMs: info.mtimeMs };
  };

  it("sends the photo's own sidecar before a shared one, and delete mode removes the photo and the sidecar sent", async () => {
    const media = await writeMedia(watchDir, ['a.jpg', 'a.jpg.xmp', 'a.xmp', 'b.heic', 'b.xmp']);
    const a = recordedWith({ ...deps(), afterUpload: 'delete' });
    expect((await processFile(await settled('a.jpg'), a.deps)).kind).toBe('uploaded');
    expect(server.assetByChecksum(sha1(media.get('a.jpg') ?? Buffer.alloc(0)))?.sidecar).toEqual({ filename: 'a.jpg.xmp', bytes: media.get('a.jpg.xmp') });
    expect(await readIfExists(join(watchDir, 'a.jpg'))).toBeUndefined();
    expect(await readIfExists(join(watchDir, 'a.jpg.xmp'))).toBeUndefined();
    // a.xmp did not go: what it holds is only here.
    expect(await readIfExists(join(watchDir, 'a.xmp'))).toEqual(media.get('a.xmp'));

    const bSidecar = await version('b.xmp');
    const b = recordedWith({ ...deps(), afterUpload: 'keep' });
    expect((await processFile(await settled('b.heic'), b.deps)).kind).toBe('uploaded');
    expect(server.assetByChecksum(sha1(media.get('b.heic') ?? Buffer.alloc(0)))?.sidecar).toEqual({ filename: 'b.xmp', bytes: media.get('b.xmp') });
    expect(b.onServer()).toMatchObject({ serverStatus: 'created', sidecar: bSidecar });
  });

  it('a large file: its upload, started with the hash, carries the sidecar', async () => {
    const bytes = randomBytes(3 * 1024 * 1024);
    writeFileSync(join(watchDir, 'v.mp4'), bytes);
    const media = await writeMedia(watchDir, ['v.mp4.xmp']);
    const sent = await version('v.mp4.xmp');
    const run = recordedWith(deps());
    expect((await processFile(await settled('v.mp4'), run.deps)).kind).toBe('uploaded');
    expect(server.assetByChecksum(sha1(bytes))?.sidecar).toEqual({ filename: 'v.mp4.xmp', bytes: media.get('v.mp4.xmp') });
    expect(run.onServer()?.sidecar).toEqual(sent);
    // Moved into the archive with its video.
    expect(await readIfExists(join(archiveDir, 'v.mp4.xmp'))).toEqual(media.get('v.mp4.xmp'));
  });

  it('does not send a sidecar over 4 MB, says so, and delete mode keeps it', async () => {
    const media = await writeMedia(watchDir, ['big.jpg']);
    writeFileSync(join(watchDir, 'big.jpg.xmp'), Buffer.alloc(SIDECAR_MAX_BYTES + 1, 0x20));
    const run = recordedWith({ ...deps(), afterUpload: 'delete' });
    const outcome = await processFile(await settled('big.jpg'), run.deps);
    expect(outcome).toMatchObject({ kind: 'uploaded', sidecarNotSent: 'big.jpg.xmp was not sent with it: it is over 4 MB' });
    expect(server.assetByChecksum(sha1(media.get('big.jpg') ?? Buffer.alloc(0)))?.sidecar).toBeUndefined();
    expect(run.onServer()?.sidecar).toBeUndefined();
    expect((await stat(join(watchDir, 'big.jpg.xmp'))).size).toBe(SIDECAR_MAX_BYTES + 1);
  });

  it('keeps the sidecar of a photo the server already had: it did not go', async () => {
    const media = await writeMedia(watchDir, ['d.jpg', 'd.jpg.xmp']);
    server.seedAsset({ checksum: sha1(media.get('d.jpg') ?? Buffer.alloc(0)) });
    const run = recordedWith({ ...deps(), afterUpload: 'delete' });
    expect(await processFile(await settled('d.jpg'), run.deps)).toMatchObject({ kind: 'already-on-server', sidecarNotSent: true });
    expect(run.onServer()?.sidecar).toBeUndefined();
    expect(await readIfExists(join(watchDir, 'd.jpg'))).toBeUndefined();
    expect(await readIfExists(join(watchDir, 'd.jpg.xmp'))).toEqual(media.get('d.jpg.xmp'));
  });
});

describe('processFile reads a small file once', () => {
  const MiB = 1024 * 1024;

  /**
   * Runs `name` through the pipeline, overwriting it with other bytes of the same size just
   * before its upload starts: what the server then receives tells where the upload read from
   * (the bytes that were hashed, or the disk as it is now).
   */
  async function uploadRewritten(name: string, size: number): Promise<{ hashed: Buffer; rewritten: Buffer }> {
    const [hashed, rewritten] = [randomBytes(size), randomBytes(size)];
    const path = join(watchDir, name);
    writeFileSync(path, hashed);
    const base = deps();
    await processFile(await settled(name), {
      ...base,
      record: makeRecorder(
        (file, state, details) => base.record(file, state, details),
        (file, state, details) => {
          base.record(file, state, details);
          if (state === 'uploading') writeFileSync(file.path, rewritten);
        },
      ),
    });
    return { hashed, rewritten };
  }

  it('uploads the bytes it hashed, identical to the file on disk', async () => {
    const files = await writeMedia(watchDir, ['small.jpg'], 200 * 1024);
    const bytes = files.get('small.jpg') ?? Buffer.alloc(0);
    expect((await processFile(await settled('small.jpg'), deps())).kind).toBe('uploaded');
    const asset = server.assetByChecksum(sha1(bytes));
    expect(asset?.bytes?.equals(bytes)).toBe(true);
    expect(asset?.headerChecksum).toBe(sha1(bytes));
  });

  for (const [label, size] of [
    ['200 KB', 200 * 1024],
    ['exactly 1 MiB', MiB],
  ] as const) {
    it(`${label}: sent from memory, so a rewrite after hashing does not reach the server`, async () => {
      const { hashed } = await uploadRewritten('memory.jpg', size);
      expect(server.assets).toHaveLength(1);
      expect(server.assets[0]).toMatchObject({ checksum: sha1(hashed), size });
    });
  }

  it('a large file is streamed from disk, nothing of it kept from the hash', () => {
    const file = { path: join(watchDir, 'large.mp4'), root: { path: watchDir, archivePath: archiveDir }, size: MiB + 1, mtimeMs: 0, birthtimeMs: 0 };
    const request = buildUploadRequest(file, { checksum: 'c'.repeat(40) }, 3);
    expect('bytes' in request.file).toBe(false);
    expect(request.file).toMatchObject({ size: MiB + 1 });
  });

  for (const [label, change] of [
    ['grows', (path: string) => appendFile(path, 'more')],
    ['shrinks', (path: string) => truncate(path, 1_000)],
  ] as const) {
    it(`a small file that ${label} between settling and hashing is reported changed, nothing sent`, async () => {
      await writeMedia(watchDir, ['moving.jpg'], 200 * 1024);
      const file = await settled('moving.jpg');
      await change(file.path);
      expect(await processFile(file, deps())).toEqual({ kind: 'changed' });
      expect(states).toEqual(['settled']);
      expect(server.requests.filter((r) => r.path.startsWith('/api/assets'))).toHaveLength(0);
    });
  }
});

describe('processFile uploads a large file while hashing it', () => {
  const MiB = 1024 * 1024;

  /** A hashing thread whose large-file hashes wait until `release` is called. */
  class HeldHashes extends FsWorker {
    #release: () => void = () => undefined;
    readonly #released = new Promise<void>((resolve) => (this.#release = resolve));
    release(): void {
      this.#release();
    }
    override async hash(path: string, size: number, signal?: AbortSignal): Promise<{ checksum: string; size: number }> {
      await this.#released;
      return super.hash(path, size, signal);
    }
  }
  const uploadRequests = (): number => server.requests.filter((r) => r.method === 'POST' && r.path === '/api/assets').length;

  for (const [label, size] of [
    ['1 MiB + 1', MiB + 1],
    ['3 MiB', 3 * MiB],
  ] as const) {
    it(`${label}: the upload starts with the hash, and the states keep their order`, async () => {
      const bytes = randomBytes(size);
      writeFileSync(join(watchDir, 'large.mp4'), bytes);
      const hashing = new HeldHashes();
      onTestFinished(() => hashing.close());
      const running = processFile(await settled('large.mp4'), { ...deps(), hashing });
      await waitFor(() => uploadRequests() === 1, { message: 'the upload to start while the hash waits' });
      expect(states).toEqual(['settled']);
      hashing.release();
      expect((await running).kind).toBe('uploaded');
      expect(states).toEqual(['settled', 'hashed', 'uploading', 'on-server', 'archiving', 'archived']);
      expect(server.assets).toHaveLength(1);
      // Sent before the checksum was known: the server hashed what it received.
      expect(server.assets[0]).toMatchObject({ checksum: sha1(bytes), size });
      expect(server.assets[0]?.headerChecksum).toBeUndefined();
      expect(uploadRequests()).toBe(1);
    });
  }

  it('cancels the upload when the check finds the file on the server', async () => {
    const bytes = randomBytes(3 * MiB);
    writeFileSync(join(watchDir, 'known.mp4'), bytes);
    const seeded = server.seedAsset({ checksum: sha1(bytes), filename: 'known.mp4' });
    // The upload is left unanswered: only the check can decide.
    server.delayNext(1, 60_000, { path: '/api/assets', exact: true });
    const outcome = await processFile(await settled('known.mp4'), deps());
    expect(outcome).toMatchObject({ kind: 'already-on-server', assetId: seeded.id });
    expect(states).toEqual(['settled', 'hashed', 'on-server', 'archiving', 'archived']);
    expect(uploadRequests()).toBe(1);
    expect(server.uploadCount).toBe(0);
    expect(server.assets).toHaveLength(1);
    expect(await readIfExists(join(archiveDir, 'known.mp4'))).toBeDefined();
  });

  it('in delete mode keeps a file the server has only in its trash, even when its upload answers first', async () => {
    const bytes = randomBytes(3 * MiB);
    writeFileSync(join(watchDir, 'trashed.mp4'), bytes);
    server.seedAsset({ checksum: sha1(bytes), trashed: true });
    const hashing = new HeldHashes();
    onTestFinished(() => hashing.close());
    const running = processFile(await settled('trashed.mp4'), { ...deps(), afterUpload: 'delete', hashing });
    // The upload, sent while the hash waits, is answered "duplicate" before the checksum is known.
    await waitFor(() => server.requests.some((r) => r.path === '/api/assets' && r.status === 200), { message: 'the upload to be answered' });
    hashing.release();
    const outcome = await running;
    expect(outcome).toMatchObject({ kind: 'failed', stage: 'check', retryable: true });
    expect(sha1((await readIfExists(join(watchDir, 'trashed.mp4'))) ?? Buffer.alloc(0))).toBe(sha1(bytes));
    expect(states).toEqual(['settled', 'hashed']);
  });

  it('a cancelled upload still waiting for a slot leaves the queue: the file does not wait for the slot', async () => {
    const bytes = randomBytes(2 * MiB);
    writeFileSync(join(watchDir, 'queued.mp4'), bytes);
    const seeded = server.seedAsset({ checksum: sha1(bytes) });
    const limitUpload = limitWhileWaiting(new PQueue({ concurrency: 1 }), new AbortController().signal);
    let releaseSlot: () => void = () => undefined;
    const slotTaken = limitUpload(() => new Promise<void>((resolve) => (releaseSlot = resolve)));
    try {
      const outcome = await processFile(await settled('queued.mp4'), { ...deps(), limitUpload });
      expect(outcome).toMatchObject({ kind: 'already-on-server', assetId: seeded.id });
      expect(uploadRequests()).toBe(0);
    } finally {
      releaseSlot();
      await slotTaken;
    }
  });

  it('cancels the upload of a file that changed while it was hashed', async () => {
    await writeMedia(watchDir, ['moving.mp4'], 2 * MiB);
    const file = await settled('moving.mp4');
    server.delayNext(1, 60_000, { path: '/api/assets', exact: true });
    await appendFile(file.path, 'more');
    expect(await processFile(file, deps())).toEqual({ kind: 'changed' });
    expect(server.assets).toHaveLength(0);
    expect(await readIfExists(file.path)).toBeDefined();
  });
});
