/**
 * The crash test: the real CLI is killed with SIGKILL at many moments of a run — while hashing,
 * uploading, recording, moving, copying across devices, deleting — and started again each time.
 * Whatever the moment, no picture may be lost, half-moved or uploaded twice, and a last clean run
 * must finish everything.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Journal } from '../../src/journal/journal.js';
import { isArchiveTemporary } from '../../src/pipeline/archive.js';
import { startFakeImmich, type FakeImmich } from '../fakes/immich-server.js';
import { runCli, startCli } from '../helpers/cli.js';
import { readIfExists, writeMedia } from '../helpers/media.js';
import { makeTempDir } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait-for.js';

const KEY = 'crash-test-key-5d1e';
/** Three scenarios: at least 60 kills in all. */
const KILLS_PER_SCENARIO = 20;

/** A deterministic generator, so a failing sequence of kill points can be replayed. */
function mulberry32(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sha1 = (bytes: Buffer): string => createHash('sha1').update(bytes).digest('hex');

async function listFiles(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (folder: string): Promise<void> => {
    for (const entry of await readdir(folder, { withFileTypes: true }).catch(() => [])) {
      const path = join(folder, entry.name);
      if (entry.isDirectory()) await walk(path);
      else out.push(relative(root, path));
    }
  };
  await walk(root);
  return out;
}

describe.each([
  { name: 'same file system', mode: 'move', exdev: false, seed: 7 },
  { name: 'archive on another device (injected EXDEV)', mode: 'move', exdev: true, seed: 11 },
  { name: 'delete mode', mode: 'delete', exdev: false, seed: 13 },
] as const)('SIGKILL at many moments, $name', ({ mode, exdev, seed }) => {
  let temp: { path: string; remove: () => Promise<void> };
  let server: FakeImmich;

  beforeAll(async () => {
    temp = await makeTempDir('iau-crash-');
    server = await startFakeImmich({ major: 3, storeBytes: false, keys: { [KEY]: { name: 'crash', permissions: ['asset.upload'] } } });
  });

  afterAll(async () => {
    await server.close();
    await temp.remove();
  });

  it('loses nothing, uploads each file once, and finishes after the last restart', async () => {
    const watchDir = join(temp.path, 'inbox');
    const archiveDir = join(temp.path, 'archive');
    const random = mulberry32(seed);
    const small = await writeMedia(watchDir, Array.from({ length: 250 }, (_, i) => `small/${i % 8}/img-${i}.jpg`), 8 * 1024);
    const large = new Map<string, Buffer>();
    await mkdir(join(watchDir, 'large'), { recursive: true });
    for (let i = 0; i < 3; i++) {
      const bytes = randomBytes(12 * 1024 * 1024);
      large.set(`large/video-${i}.mp4`, bytes);
      await writeFile(join(watchDir, `large/video-${i}.mp4`), bytes);
    }
    const files = new Map([...small, ...large]);
    // Each photo's sidecar goes to the server with it. A move takes it into the archive after its
    // photo; delete mode may remove it only once the server has it with its photo.
    const sidecars = new Map<string, string>();
    const photos = [...small.keys()].filter((_, i) => i % 10 === 0);
    await writeMedia(watchDir, photos.map((photo) => `${photo}.xmp`), 300);
    for (const photo of photos) sidecars.set(`${photo}.xmp`, photo);
    const onServer = (bytes: Buffer): boolean => server.assets.some((asset) => asset.checksum === sha1(bytes));
    const sidecarOnServer = (photo: Buffer, sidecar: Buffer): boolean =>
      server.assets.some((asset) => asset.checksum === sha1(photo) && asset.sidecar?.bytes.equals(sidecar) === true);
    const sidecarBytes = await Promise.all([...sidecars.keys()].map(async (name) => readFile(join(watchDir, name))));
    const sidecarBytesOf = new Map([...sidecars.keys()].map((name, i) => [name, sidecarBytes[i] ?? Buffer.alloc(0)]));
    // Each upload answer waits a little, so kills land inside uploads too.
    server.delayNext(10_000, 40, { path: '/api/assets', exact: true });

    const env = {
      IMMICH_API_URL: server.url,
      IMMICH_API_KEY: KEY,
      WATCH_DIRECTORIES: watchDir,
      ARCHIVE_DIRECTORY: archiveDir,
      STATE_DIRECTORY: join(temp.path, 'state'),
      FILE_STABILITY_WAIT_SECONDS: '0.1',
      FILE_STABILITY_CHECK_INTERVAL: '0.05',
      UPLOAD_CONCURRENCY: '2',
      AFTER_UPLOAD: mode,
      LOG_LEVEL: 'trace',
      ...(exdev ? { IMMICH_AUTO_UPLOADER_SIMULATE_EXDEV: '1' } : {}),
    };

    /**
     * Every file's bytes exist, whole, in the watch folder or in the archive (move), or in the
     * watch folder or on the server (delete); a sidecar is in the watch folder, in the archive
     * (move), or on the server with its photo (delete).
     */
    const expectNothingLost = async (when: string): Promise<void> => {
      for (const [name, bytes] of files) {
        const inWatch = await readIfExists(join(watchDir, name));
        const inArchive = mode === 'move' ? await readIfExists(join(archiveDir, name)) : undefined;
        const whole = [inWatch, inArchive].some((copy) => copy !== undefined && sha1(copy) === sha1(bytes));
        expect(whole || (mode === 'delete' && onServer(bytes)), `${name} exists whole somewhere ${when}`).toBe(true);
      }
      for (const [sidecar, photo] of sidecars) {
        const bytes = sidecarBytesOf.get(sidecar) ?? Buffer.alloc(0);
        const kept = (await readIfExists(join(watchDir, sidecar)))?.equals(bytes) === true;
        const archived = mode === 'move' && (await readIfExists(join(archiveDir, sidecar)))?.equals(bytes) === true;
        const sent = mode === 'delete' && sidecarOnServer(files.get(photo) ?? Buffer.alloc(0), bytes);
        expect(kept || archived || sent, `${sidecar} is whole in the watch folder, the archive or on the server with its photo ${when}`).toBe(true);
      }
    };
    const disposing = mode === 'move' ? 'archiving' : 'deleting';
    /** Photos and videos still in the watch folder (sidecars may stay: see the end). */
    const mediaLeft = async (): Promise<number> => (await listFiles(watchDir)).filter((path) => !sidecars.has(path)).length;

    /** The states files were caught in by the kills, as the journal recorded them. */
    const caughtIn = new Set<string>();
    let kills = 0;
    for (let cycle = 0; cycle < KILLS_PER_SCENARIO; cycle++) {
      const run = startCli(['watch'], { env });
      // Kill after a varied number of state transitions: early (hashing, uploading) or late
      // (recording, archiving, copying); or right after an archive step of a large file begins.
      const pick = random();
      const atTransition = pick < 0.4 ? 1 + Math.floor(random() * 12) : 12 + Math.floor(random() * 100);
      const onLargeArchive = pick >= 0.8;
      const transitions = (): number => run.logs().filter((line) => line.msg === 'state').length;
      await waitFor(
        async () =>
          run.child.exitCode !== null ||
          (onLargeArchive && run.logs().some((line) => line.state === disposing && String(line.file).includes('video-'))) ||
          transitions() >= atTransition ||
          (await mediaLeft()) === 0,
        { timeoutMs: 30_000, intervalMs: 5, message: () => `kill point ${cycle}; output:\n${run.stdout().slice(-2000)}\n${run.stderr()}` },
      );
      run.child.kill('SIGKILL');
      await run.exited;
      kills++;
      await expectNothingLost(`after kill ${cycle}`);
      const journal = Journal.openReadOnly(env.STATE_DIRECTORY);
      for (const row of journal?.unfinished() ?? []) caughtIn.add(row.state);
      journal?.close();
      const left = await mediaLeft();
      if (process.env.CRASH_TEST_VERBOSE) console.log(`kill ${cycle} at ${transitions()} transitions: ${left} left; caught in ${[...caughtIn].join(', ')}`);
      if (left === 0) break;
    }
    // Every kill interrupted a run with work left to do, during uploads and after them.
    expect(kills).toBe(KILLS_PER_SCENARIO);
    expect(caughtIn).toContain('uploading');
    expect([...caughtIn].some((state) => state === 'on-server' || state === disposing)).toBe(true);

    const final = await runCli(['once'], { env: { ...env, LOG_LEVEL: 'info' }, timeoutMs: 60_000 });
    expect(final.code, final.stdout.slice(-3000) + final.stderr).toBe(0);

    // Every file archived with exactly its bytes, its sidecar beside it (move), or deleted (delete),
    // and every photo on the server with its sidecar. In delete mode the watch folder may hold
    // sidecars: one whose photo's upload was cut off after the server had it cannot be known to
    // have gone with it, and stays.
    if (mode === 'move') {
      for (const [name, bytes] of [...files, ...sidecarBytesOf]) {
        const archived = await readFile(join(archiveDir, name));
        expect(sha1(archived), name).toBe(sha1(bytes));
      }
      expect(await listFiles(watchDir)).toEqual([]);
    }
    for (const [sidecar, photo] of sidecars) {
      expect(sidecarOnServer(files.get(photo) ?? Buffer.alloc(0), sidecarBytesOf.get(sidecar) ?? Buffer.alloc(0)), sidecar).toBe(true);
    }
    expect(await mediaLeft()).toBe(0);
    if (process.env.CRASH_TEST_VERBOSE) console.log(`sidecars left: ${(await listFiles(watchDir)).length} of ${sidecars.size}`);
    // Nothing left under a temporary name, and nothing extra in the archive.
    const archived = await listFiles(archiveDir);
    expect(archived.filter((path) => isArchiveTemporary(path.split('/').pop() ?? ''))).toEqual([]);
    expect(archived.sort()).toEqual(mode === 'move' ? [...files.keys(), ...sidecars.keys()].sort() : []);
    // The server holds each checksum exactly once, created exactly once.
    for (const bytes of files.values()) {
      expect(server.assets.filter((asset) => asset.checksum === sha1(bytes))).toHaveLength(1);
    }
    const created = server.requests.filter((r) => r.method === 'POST' && r.path === '/api/assets' && r.status === 201);
    expect(created).toHaveLength(files.size);
    // The journal agrees: every file in a final state.
    const status = await runCli(['status', '--json'], { env });
    const report = JSON.parse(status.stdout) as { inProgress: number; counts: Record<string, number> };
    expect(report.inProgress).toBe(0);
    expect(report.counts[mode === 'move' ? 'archived' : 'deleted']).toBe(files.size);
  }, 240_000);
});
