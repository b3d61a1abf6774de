import { mkdirSync, writeFileSync } from 'node:fs';
import { chmod, mkdir, realpath, rename, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { WatchRoot } from '../../src/config.js';
import { Detector, type DetectorOptions } from '../../src/pipeline/detect.js';
import type { Candidate } from '../../src/pipeline/types.js';
import { systemClock, abortReason, type Clock } from '../../src/support/clock.js';
import { MountTable, readMountTable } from '../../src/support/mount-table.js';
import { makeTempDir } from '../helpers/temp-dir.js';
import { bindMount, canMount, unmount } from '../helpers/mount.js';
import { waitFor } from '../helpers/wait-for.js';

const EXTENSIONS: ReadonlySet<string> = new Set(['.jpg', '.jpeg', '.heic', '.mp4', '.mov']);

interface LogLine {
  level: number;
  msg: string;
  file?: string;
  bytes?: number;
  folder?: string;
  extension?: string;
}

/** A detector on a fresh temp folder, recording what it reports and logs. */
interface Harness {
  detector: Detector;
  root: WatchRoot;
  /** A folder next to the root, on the same file system, for things built "outside". */
  outside: string;
  /** How many times each path was reported. */
  seen: Map<string, number>;
  candidates: Candidate[];
  logs: LogLine[];
}

const cleanups: (() => Promise<void>)[] = [];

afterEach(async () => {
  // Close detectors before removing their folders, newest first.
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function makeHarness(overrides: Partial<DetectorOptions> = {}, existingRoot?: WatchRoot): Promise<Harness> {
  let root = existingRoot;
  let outside = '';
  if (root === undefined) {
    const temp = await makeTempDir('iau-detect-');
    cleanups.push(temp.remove);
    // realpath: on macOS the temp folder is behind a link, and reported paths are real paths.
    const base = await realpath(temp.path);
    root = { path: join(base, 'watch'), archivePath: join(base, 'archive') };
    outside = join(base, 'outside');
    await mkdir(root.path);
    await mkdir(outside);
  }
  const seen = new Map<string, number>();
  const candidates: Candidate[] = [];
  const logs: LogLine[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as LogLine) });
  const detector = new Detector({
    roots: [root],
    recursive: true,
    polling: false,
    pollIntervalMs: 60_000,
    rescanIntervalMs: 60_000,
    excludedPaths: [],
    supportedExtensions: EXTENSIONS,
    maxFileSizeBytes: 1024 * 1024,
    clock: systemClock,
    logger,
    onCandidate: (candidate) => {
      candidates.push(candidate);
      seen.set(candidate.path, (seen.get(candidate.path) ?? 0) + 1);
    },
    ...overrides,
  });
  cleanups.push(() => detector.close());
  return { detector, root, outside, seen, candidates, logs };
}

function seenPaths(harness: Harness): string[] {
  return [...harness.seen.keys()].sort();
}

/** Number of live fs.watch handles in this process. */
function watchHandles(): number {
  return process.getActiveResourcesInfo().filter((name) => name === 'FSEventWrap').length;
}

/** The handle count once handles closed by earlier tests are gone (closing finishes a loop turn later). */
async function settledWatchHandles(): Promise<number> {
  await new Promise((resolve) => setImmediate(resolve));
  await new Promise((resolve) => setImmediate(resolve));
  return watchHandles();
}

let sentinels = 0;

/**
 * Writes a sentinel file and waits until the detector reports it, twice. Events arrive in order
 * and the detector handles them in batches, one batch after the other; the second sentinel is in
 * a later batch than anything written before the first, so by the time it is reported all of
 * that has been fully handled: a negative assertion made afterwards needs no fixed sleep.
 */
async function writeSentinel(harness: Harness, folder = harness.root.path): Promise<void> {
  for (let i = 0; i < 2; i += 1) {
    sentinels += 1;
    const path = join(folder, `sentinel-${sentinels}.jpg`);
    await writeFile(path, 'sentinel');
    await waitFor(() => harness.seen.has(path), { message: `sentinel ${path}` });
  }
}

describe('Detector: initial scan', () => {
  it('finds files at every depth and watches every folder', async () => {
    const h = await makeHarness();
    const r = h.root.path;
    await mkdir(join(r, 'a', 'b', 'c'), { recursive: true });
    await writeFile(join(r, 'top.jpg'), 'x');
    await writeFile(join(r, 'a', 'one.JPG'), 'xx');
    await writeFile(join(r, 'a', 'b', 'c', 'deep.mp4'), '');
    await h.detector.start();

    expect(seenPaths(h)).toEqual([join(r, 'a', 'b', 'c', 'deep.mp4'), join(r, 'a', 'one.JPG'), join(r, 'top.jpg')]);
    expect(h.detector.watchedFolderCount).toBe(4);
    const top = h.candidates.find((c) => c.path === join(r, 'top.jpg'));
    expect(top).toMatchObject({ root: h.root, size: 1 });
    expect(top?.mtimeMs).toBeGreaterThan(0);
    // Empty files are reported: the settle stage decides about them.
    expect(h.candidates.find((c) => c.path.endsWith('deep.mp4'))?.size).toBe(0);
  });

  it('with recursive=false looks only at files directly in the root', async () => {
    const h = await makeHarness({ recursive: false });
    const r = h.root.path;
    await mkdir(join(r, 'sub'));
    await writeFile(join(r, 'top.jpg'), 'x');
    await writeFile(join(r, 'sub', 'nested.jpg'), 'x');
    await h.detector.start();
    expect(seenPaths(h)).toEqual([join(r, 'top.jpg')]);
    expect(h.detector.watchedFolderCount).toBe(1);

    // Live: a new sub-folder with a file is not in scope either.
    await mkdir(join(r, 'later'));
    await writeFile(join(r, 'later', 'nested.jpg'), 'x');
    await writeSentinel(h);
    expect([...h.seen.keys()].some((path) => path.includes('nested'))).toBe(false);
    expect(h.detector.watchedFolderCount).toBe(1);
  });

  it('warns once of each name that is not UTF-8, file or folder, and reports the files beside them', async () => {
    const h = await makeHarness();
    const latin1 = (name: string): Buffer => Buffer.from(name, 'latin1'); // 'é' is one byte, 0xE9: not UTF-8
    const bytes = (...parts: Buffer[]): Buffer => Buffer.concat([Buffer.from(`${h.root.path}/`), ...parts]);
    writeFileSync(bytes(latin1('café.jpg')), 'x');
    mkdirSync(bytes(latin1('été')));
    writeFileSync(bytes(latin1('été'), Buffer.from('/IMG_1.jpg')), 'x');
    await writeFile(join(h.root.path, 'ok.jpg'), 'x');
    await writeFile(join(h.root.path, 'real \uFFFD.jpg'), 'x'); // the character itself, in UTF-8: an ordinary name
    await h.detector.start();
    await h.detector.rescan();
    expect(seenPaths(h)).toEqual([join(h.root.path, 'ok.jpg'), join(h.root.path, 'real \uFFFD.jpg')]);
    const warned = h.logs.filter((line) => line.level === 40).map((line) => line.msg);
    // Two passes (the start and a rescan), one warning each.
    expect(warned).toHaveLength(2);
    expect(warned).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^Cannot upload .*\/caf\uFFFD\.jpg: its name is not valid UTF-8 .* Rename it/),
        expect.stringMatching(/^Cannot upload .*\/\uFFFDt\uFFFD: its name is not valid UTF-8/),
      ]),
    );
  });

  it('skips hidden, partial, system and unsupported names and system folders', async () => {
    const h = await makeHarness();
    const r = h.root.path;
    const skipped = [
      '.DS_Store',
      '._IMG_1.jpg',
      '.syncthing.IMG_2.jpg.tmp',
      'IMG_3.jpg.part',
      'IMG_4.mp4.crdownload',
      'IMG_5.jpg.tmp',
      '~$IMG_6.jpg',
      'Thumbs.db',
      'desktop.ini',
      'notes.txt',
      '@eaDir/IMG_7.jpg',
      '@eaDir/IMG_7b.jpg/SYNOPHOTO_THUMB_XL.jpg',
      '.hidden/IMG_8.jpg',
      '#recycle/IMG_9.jpg',
      '$RECYCLE.BIN/IMG_10.jpg',
      'lost+found/IMG_11.jpg',
    ];
    const write = async (folder: string): Promise<void> => {
      for (const name of skipped) {
        const path = join(folder, name);
        await mkdir(join(path, '..'), { recursive: true });
        await writeFile(path, 'x');
      }
    };
    await write(r);
    await writeFile(join(r, 'IMG_0.jpg'), 'x');
    await h.detector.start();
    expect(seenPaths(h)).toEqual([join(r, 'IMG_0.jpg')]);
    expect(h.detector.watchedFolderCount).toBe(1);

    // The same names arriving live are skipped too.
    await mkdir(join(r, 'live'));
    await waitFor(() => h.detector.watchedFolderCount === 2, { message: 'live folder watched' });
    await write(join(r, 'live'));
    await writeSentinel(h, join(r, 'live'));
    expect(seenPaths(h).filter((path) => !path.includes('sentinel'))).toEqual([join(r, 'IMG_0.jpg')]);
  });

  it('does not follow symbolic links to files or folders', async () => {
    const h = await makeHarness();
    const r = h.root.path;
    await mkdir(join(h.outside, 'album'));
    await writeFile(join(h.outside, 'photo.jpg'), 'x');
    await writeFile(join(h.outside, 'album', 'inside.jpg'), 'x');
    await symlink(join(h.outside, 'photo.jpg'), join(r, 'link.jpg'));
    await symlink(join(h.outside, 'album'), join(r, 'album-link'));
    await writeFile(join(r, 'real.jpg'), 'x');
    await h.detector.start();
    expect(seenPaths(h)).toEqual([join(r, 'real.jpg')]);
    expect(h.detector.watchedFolderCount).toBe(1);

    // Links created while watching are not followed either.
    await symlink(join(h.outside, 'photo.jpg'), join(r, 'live-link.jpg'));
    await symlink(join(h.outside, 'album'), join(r, 'live-album-link'));
    await writeSentinel(h);
    expect([...h.seen.keys()].some((path) => path.includes('link') || path.includes('inside'))).toBe(false);
    expect(h.detector.watchedFolderCount).toBe(1);
  });
});

describe('Detector: a scan waits for room', () => {
  async function harnessWithGate(allowed: number) {
    let calls = 0;
    let open: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const h = await makeHarness({
      room: async (signal) => {
        calls += 1;
        if (calls <= allowed) return;
        await Promise.race([gate, new Promise((resolve) => signal.addEventListener('abort', resolve))]);
      },
    });
    for (let i = 0; i < 10; i += 1) await writeFile(join(h.root.path, `${i}.jpg`), 'x');
    return { h, calls: () => calls, open };
  }

  it('reports no file past a full pipeline until there is room, then all of them', async () => {
    const { h, calls, open } = await harnessWithGate(3);
    const started = h.detector.start();
    // The fourth file waits for room; the three before it are reported.
    await waitFor(() => calls() === 4 && h.candidates.length === 3);
    open();
    await started;
    expect(h.candidates).toHaveLength(10);
  });

  it('lets a large folder into a full pipeline a few files ahead, not all at once', async () => {
    // Room while fewer than 10 files were reported: the pipeline counts files once it has them,
    // so the scan must not run ahead of their lstats through the whole folder.
    let waiting = 0;
    let open: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const h = await makeHarness({
      room: async (signal) => {
        if (h.candidates.length < 10) return;
        waiting += 1;
        await Promise.race([gate, new Promise((resolve) => signal.addEventListener('abort', resolve))]);
      },
    });
    const camera = join(h.root.path, 'DCIM', '100CANON');
    await mkdir(camera, { recursive: true });
    for (let i = 0; i < 1000; i += 1) writeFileSync(join(camera, `IMG_${i}.jpg`), 'x');
    const started = h.detector.start();
    await waitFor(() => waiting === 1, { message: 'the scan waits for room' });
    await writeSentinel(h); // its lstat queues behind the scan's: those in flight have landed
    const fromScan = h.candidates.filter((c) => c.path.startsWith(camera)).length;
    expect(fromScan).toBeLessThanOrEqual(10 + 2 * 64);
    open();
    await started;
    await waitFor(() => h.candidates.filter((c) => c.path.startsWith(camera)).length === 1000);
  });

  it('reports the files of the folders it lists at once one folder after the other', async () => {
    // Files archived one after another into one folder share its fsync: the pipeline gets them
    // folder by folder, not eight folders in turn.
    const h = await makeHarness({ room: async () => undefined });
    for (const folder of ['a', 'b', 'c']) {
      await mkdir(join(h.root.path, folder));
      for (let i = 0; i < 100; i += 1) writeFileSync(join(h.root.path, folder, `${i}.jpg`), 'x');
    }
    await h.detector.start();
    const folders = h.candidates.map((c) => basename(dirname(c.path)));
    const switches = folders.filter((folder, i) => i > 0 && folder !== folders[i - 1]).length;
    expect(folders).toHaveLength(300);
    // lstats finish a little out of order at a folder's end: a few switches, not hundreds.
    expect(switches).toBeLessThan(12);
  });

  /** A detector started with room for its start (an empty watch folder), and none after it until `open`. */
  async function startedThenFull(): Promise<{ h: Harness; waiting: () => number; open: () => void }> {
    let full = false;
    let waiting = 0;
    let open: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const h = await makeHarness({
      room: async (signal) => {
        if (!full) return;
        waiting += 1;
        await Promise.race([gate, new Promise((resolve) => signal.addEventListener('abort', resolve))]);
      },
    });
    await h.detector.start();
    full = true;
    return { h, waiting: () => waiting, open };
  }

  it('lets many folders moved in wait for room at once without a listener warning in the log', async () => {
    const warnings: string[] = [];
    const onWarning = (warning: Error): void => void warnings.push(warning.name);
    process.on('warning', onWarning);
    try {
      const { h, waiting, open } = await startedThenFull();
      // A tree copied in: one walk per folder, each waiting for room.
      for (let i = 0; i < 15; i += 1) {
        await mkdir(join(h.outside, `album${i}`));
        await writeFile(join(h.outside, `album${i}`, 'a.jpg'), 'x');
        await rename(join(h.outside, `album${i}`), join(h.root.path, `album${i}`));
      }
      await waitFor(() => waiting() === 15, { message: 'every walk waits for room' });
      await new Promise((resolve) => setImmediate(resolve));
      open();
      await waitFor(() => h.seen.size === 15, { message: 'every file reported' });
    } finally {
      process.off('warning', onWarning);
    }
    expect(warnings).toEqual([]);
  });

  it('handles events while a folder moved in waits for room, and walks a folder replaced meanwhile', async () => {
    const { h, waiting, open } = await startedThenFull();

    const album = join(h.root.path, 'album');
    await mkdir(join(h.outside, 'album'));
    for (let i = 0; i < 5; i += 1) await writeFile(join(h.outside, 'album', `${i}.jpg`), 'x');
    await rename(join(h.outside, 'album'), album);
    await waitFor(() => waiting() === 1, { message: 'the walk of the moved-in folder waits for room' });

    // Events are not held back behind that walk: a file written now is reported now.
    const fresh = join(h.root.path, 'fresh.jpg');
    await writeFile(fresh, 'x');
    await waitFor(() => h.seen.has(fresh), { message: 'a new file reported while the walk waits' });

    // The folder is replaced at its path while its walk waits: the new one is walked too.
    await rename(album, join(h.outside, 'old-album'));
    await mkdir(join(h.outside, 'album2'));
    await writeFile(join(h.outside, 'album2', 'other.jpg'), 'x');
    await rename(join(h.outside, 'album2'), album);
    await writeSentinel(h); // the events before it are handled: the walk of album is asked again
    expect(h.seen.has(join(album, 'other.jpg'))).toBe(false);
    open();
    await waitFor(() => h.seen.has(join(album, 'other.jpg')), { message: 'the replacing folder walked' });
  });

  it('stops waiting when it is closed', async () => {
    const { h, calls } = await harnessWithGate(0);
    const started = h.detector.start();
    await waitFor(() => calls() === 1);
    await h.detector.close();
    await started;
    expect(h.candidates).toHaveLength(0);
  });
});

describe('Detector: watching', () => {
  it('reports a file created after start', async () => {
    const h = await makeHarness();
    await h.detector.start();
    const path = join(h.root.path, 'new.heic');
    await writeFile(path, 'hello');
    await waitFor(() => h.candidates.find((c) => c.path === path && c.size === 5), { message: 'new file' });
  });

  it('loses nothing when a folder is made with mkdir -p and 250 files are written into it at once', async () => {
    const h = await makeHarness();
    await h.detector.start();
    // Twice: all writes issued at once, then one after another (which interleaves them with the
    // detector's own work, so some land between its listing and its watch if those were reversed).
    const burst = join(h.root.path, 'a', 'b');
    await mkdir(burst, { recursive: true });
    const burstPaths = Array.from({ length: 250 }, (_, i) => join(burst, `IMG_${i}.jpg`));
    await Promise.all(burstPaths.map((path) => writeFile(path, 'x')));

    const sequential = join(h.root.path, 'c', 'd');
    await mkdir(sequential, { recursive: true });
    const sequentialPaths = Array.from({ length: 250 }, (_, i) => join(sequential, `IMG_${i}.jpg`));
    for (const path of sequentialPaths) await writeFile(path, 'x');

    const paths = [...burstPaths, ...sequentialPaths];
    const missing = (): number => paths.filter((path) => !h.seen.has(path)).length;
    await waitFor(() => missing() === 0, { message: () => `all 500 files (${missing()} missing)` });
    expect(h.detector.watchedFolderCount).toBe(5);
  });

  it('scans a folder moved in from outside, sub-folders included, and watches them', async () => {
    const h = await makeHarness();
    await h.detector.start();
    const built = join(h.outside, 'trip');
    await mkdir(join(built, 'day1'), { recursive: true });
    await writeFile(join(built, 'a.jpg'), 'x');
    await writeFile(join(built, 'day1', 'b.jpg'), 'x');
    await writeFile(join(built, 'day1', 'c.mov'), 'x');
    const moved = join(h.root.path, 'trip');
    await rename(built, moved);
    const expected = [join(moved, 'a.jpg'), join(moved, 'day1', 'b.jpg'), join(moved, 'day1', 'c.mov')];
    await waitFor(() => expected.every((path) => h.seen.has(path)), { message: 'moved-in files' });

    // Written later into the moved-in folder's sub-folder: seen through the new watch.
    const later = join(moved, 'day1', 'later.jpg');
    await writeFile(later, 'x');
    await waitFor(() => h.seen.has(later), { message: 'file written later into the moved-in sub-folder' });
    expect(h.detector.watchedFolderCount).toBe(3);
  });

  it('watches a folder again after it is deleted and re-created', async () => {
    const h = await makeHarness();
    await h.detector.start();
    const folder = join(h.root.path, 'again');
    for (let round = 0; round < 3; round += 1) {
      await mkdir(folder);
      const path = join(folder, `round-${round}.jpg`);
      await writeFile(path, 'x');
      await waitFor(() => h.seen.has(path), { message: `file in round ${round}` });
      await rm(folder, { recursive: true });
    }
    // Deleted and re-created in quick succession, the file written afterwards.
    await mkdir(folder);
    await rm(folder, { recursive: true });
    await mkdir(folder);
    const last = join(folder, 'last.jpg');
    await writeFile(last, 'x');
    await waitFor(() => h.seen.has(last), { message: 'file in the quickly re-created folder' });
    await waitFor(() => h.detector.watchedFolderCount === 2, { message: 'exactly root + folder watched' });
  });

  it('does not re-walk a watched root when only its own attributes change', async () => {
    const h = await makeHarness();
    const existing = join(h.root.path, 'a', 'existing.jpg');
    await mkdir(join(h.root.path, 'a'));
    await writeFile(existing, 'x');
    await h.detector.start();
    expect(h.seen.get(existing)).toBe(1);
    // A chmod or touch of the root is an event on the root's own watch: walking 100,000 files
    // again for it would be waste.
    await chmod(h.root.path, 0o750);
    await chmod(h.root.path, 0o755);
    await writeSentinel(h);
    expect(h.seen.get(existing)).toBe(1);
  });

  it('forgets the watches of a folder moved away', async () => {
    const h = await makeHarness();
    await mkdir(join(h.root.path, 'away', 'sub'), { recursive: true });
    await h.detector.start();
    expect(h.detector.watchedFolderCount).toBe(3);
    await rename(join(h.root.path, 'away'), join(h.outside, 'away'));
    await waitFor(() => h.detector.watchedFolderCount === 1, { message: 'watches released' });
  });

  it('skips a file over the size limit with one warning and never reports it', async () => {
    const h = await makeHarness({ maxFileSizeBytes: 3 * 1024 * 1024 });
    const big = join(h.root.path, 'big.mp4');
    await writeFile(big, Buffer.alloc(5 * 1024 * 1024));
    await writeFile(join(h.root.path, 'small.jpg'), 'x');
    await h.detector.start();
    await h.detector.rescan();
    await h.detector.rescan();
    // Events on it (a touch) do not warn again either.
    await utimes(big, new Date(), new Date());
    await writeSentinel(h);

    expect(h.seen.has(big)).toBe(false);
    expect(h.seen.has(join(h.root.path, 'small.jpg'))).toBe(true);
    const warnings = h.logs.filter((line) => line.level === 40 && line.file === big);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ bytes: 5 * 1024 * 1024 });
    expect(warnings[0]?.msg).toBe(`Skipping ${big}: it is 5 MB (5242880 bytes), over MAX_FILE_SIZE_MB=3; raise it to upload the file`);
  });

  it('warns once per extension about photos and videos SUPPORTED_EXTENSIONS leaves out, and only those', async () => {
    const h = await makeHarness({ supportedExtensions: new Set(['.jpg']) });
    for (const name of ['a.jpg', 'IMG_1.HEIC', 'IMG_2.heic', 'raw/IMG_3.CR3', 'notes.txt', 'photo.jpg.xmp']) {
      await mkdir(dirname(join(h.root.path, name)), { recursive: true });
      await writeFile(join(h.root.path, name), 'x');
    }
    await h.detector.start();
    await h.detector.rescan();
    await writeSentinel(h);

    expect(seenPaths(h)).not.toContain(join(h.root.path, 'IMG_1.HEIC'));
    const warnings = h.logs.filter((line) => line.level === 40);
    expect(warnings.map((line) => line.extension).sort()).toEqual(['.cr3', '.heic']);
    expect(warnings.find((line) => line.extension === '.cr3')?.msg).toContain('.cr3 is not in SUPPORTED_EXTENSIONS');
  });

  it('reports .xmp sidecars, whatever their size, to onSidecar alone when it is given, from the scan and from events', async () => {
    const sidecars: Candidate[] = [];
    const h = await makeHarness({ maxFileSizeBytes: 10, onSidecar: (candidate) => void sidecars.push(candidate) });
    for (const name of ['a.jpg', 'a.jpg.xmp', 'deep/b.XMP', 'c.Xmp', '.hidden.xmp', 'notes.xmp.txt']) {
      await mkdir(dirname(join(h.root.path, name)), { recursive: true });
      await writeFile(join(h.root.path, name), 'x'.repeat(20));
    }
    await h.detector.start();
    await writeFile(join(h.root.path, 'later.jpg.xmp'), 'written after the scan');
    await writeSentinel(h);

    const paths = (found: Candidate[]): string[] => [...new Set(found.map((candidate) => candidate.path.slice(h.root.path.length + 1)))].sort();
    expect(paths(sidecars)).toEqual(['a.jpg.xmp', 'deep/b.XMP', 'later.jpg.xmp']);
    expect(sidecars.findLast((candidate) => candidate.path.endsWith('later.jpg.xmp'))).toMatchObject({ root: h.root, size: 22 });
    expect(paths(h.candidates).filter((path) => !path.startsWith('sentinel'))).toEqual([]);
    expect(h.logs.filter((line) => line.level >= 40)).toEqual([
      expect.objectContaining({ msg: expect.stringContaining('a.jpg: it is 0 MB (20 bytes), over MAX_FILE_SIZE_MB=0; raise it') as unknown }),
    ]);
  });

  it('reports no sidecar without onSidecar', async () => {
    const h = await makeHarness();
    await writeFile(join(h.root.path, 'a.jpg.xmp'), 'x');
    await h.detector.start();
    await writeSentinel(h);
    expect(seenPaths(h).filter((path) => path.endsWith('.xmp'))).toEqual([]);
  });

  it('never scans, watches or reports an excluded folder inside the root', async () => {
    const temp = await makeTempDir('iau-detect-');
    cleanups.push(temp.remove);
    const base = await realpath(temp.path);
    const archive = join(base, 'watch', 'archive');
    await mkdir(join(archive, 'deep'), { recursive: true });
    await writeFile(join(archive, 'archived.jpg'), 'x');
    await writeFile(join(archive, 'deep', 'archived2.jpg'), 'x');
    const h = await makeHarness({ excludedPaths: [archive] }, { path: join(base, 'watch'), archivePath: archive });
    await h.detector.start();
    expect(seenPaths(h)).toEqual([]);
    expect(h.detector.watchedFolderCount).toBe(1);

    await writeFile(join(archive, 'archived3.jpg'), 'x');
    await rename(join(archive, 'archived.jpg'), join(archive, 'deep', 'moved.jpg'));
    await h.detector.rescan();
    await writeSentinel(h);
    expect([...h.seen.keys()].some((path) => path.startsWith(archive))).toBe(false);
    expect(h.detector.watchedFolderCount).toBe(1);
  });

  it('keeps looking for a root that disappears, says so once, and watches it again when it is back', async () => {
    const h = await makeHarness();
    await h.detector.start();
    await rm(h.root.path, { recursive: true });
    const errors = (): LogLine[] => h.logs.filter((line) => line.level === 50 && line.folder === h.root.path);
    // The root's own watch reports its deletion, before any rescan.
    await waitFor(() => errors().length === 1, { message: 'error about the missing root' });
    await h.detector.rescan();
    await h.detector.rescan();
    expect(errors()).toHaveLength(1);
    expect(h.detector.watchedFolderCount).toBe(0);

    await mkdir(join(h.root.path, 'sub'), { recursive: true });
    await writeFile(join(h.root.path, 'sub', 'back.jpg'), 'x');
    await h.detector.rescan();
    expect(h.seen.has(join(h.root.path, 'sub', 'back.jpg'))).toBe(true);
    expect(h.detector.watchedFolderCount).toBe(2);
    expect(errors()).toHaveLength(1);

    const live = join(h.root.path, 'sub', 'live.jpg');
    await writeFile(live, 'x');
    await waitFor(() => h.seen.has(live), { message: 'file in the re-watched root' });
  });

  it('finds a root missing at start once it is there, when asked to look, without calling it an error', async () => {
    const temp = await makeTempDir('iau-detect-');
    cleanups.push(temp.remove);
    const base = await realpath(temp.path);
    const root = { path: join(base, 'stick', 'photos'), archivePath: join(base, 'archive') };
    const h = await makeHarness({ missingAtStart: [root.path] }, root);
    await h.detector.start();
    await h.detector.lookForMissingRoots();
    expect(h.seen.size).toBe(0);

    // Made on a disk a moment after it was mounted: no event, and no mount change after it.
    await mkdir(root.path, { recursive: true });
    await writeFile(join(root.path, 'IMG_1.jpg'), 'x');
    await h.detector.lookForMissingRoots();
    await waitFor(() => h.seen.has(join(root.path, 'IMG_1.jpg')), { message: 'the file in the folder that appeared' });
    expect(h.logs.filter((line) => line.level >= 50)).toEqual([]);
    expect(h.logs.map((line) => line.msg)).toContain(`Watch folder ${root.path} is back; detecting files in it again`);
    const live = join(root.path, 'live.jpg');
    await writeFile(live, 'x');
    await waitFor(() => h.seen.has(live), { message: 'a file in the folder, now watched' });
  });

  it.skipIf(process.getuid?.() === 0)('warns once about a folder it cannot read and carries on', async () => {
    const h = await makeHarness();
    const locked = join(h.root.path, 'locked');
    await mkdir(locked);
    await writeFile(join(locked, 'a.jpg'), 'x');
    await chmod(locked, 0o000);
    cleanups.push(() => chmod(locked, 0o755));
    await writeFile(join(h.root.path, 'ok.jpg'), 'x');
    await h.detector.start();
    await h.detector.rescan();
    expect(seenPaths(h)).toEqual([join(h.root.path, 'ok.jpg')]);
    expect(h.logs.filter((line) => line.level === 40 && line.folder === locked)).toHaveLength(1);
  });
});

describe('Detector: rescans and polling', () => {
  it('in polling mode finds new files without any fs.watch', async () => {
    const before = await settledWatchHandles();
    const h = await makeHarness({ polling: true, pollIntervalMs: 30 });
    await h.detector.start();
    expect(h.detector.watchedFolderCount).toBe(0);
    expect(watchHandles()).toBe(before);
    await mkdir(join(h.root.path, 'x', 'y'), { recursive: true });
    const path = join(h.root.path, 'x', 'y', 'polled.mov');
    await writeFile(path, 'x');
    await waitFor(() => h.seen.has(path), { message: 'polled file' });
    expect(watchHandles()).toBe(before);
  });

  it('rescan() finds a file that no event announced', async () => {
    const h = await makeHarness({ polling: true, pollIntervalMs: 3_600_000 });
    await h.detector.start();
    const path = join(h.root.path, 'quiet.jpg');
    await writeFile(path, 'x');
    expect(h.seen.has(path)).toBe(false);
    await h.detector.rescan();
    expect(h.seen.get(path)).toBe(1);
  });

  it('concurrent rescan() calls share one follow-up pass', async () => {
    const h = await makeHarness({ polling: true, pollIntervalMs: 3_600_000 });
    const path = join(h.root.path, 'one.jpg');
    await writeFile(path, 'x');
    await h.detector.start();
    expect(h.seen.get(path)).toBe(1);
    await Promise.all([h.detector.rescan(), h.detector.rescan(), h.detector.rescan(), h.detector.rescan()]);
    // The first call starts a pass, the other three share one pass after it.
    expect(h.seen.get(path)).toBe(3);
  });

  it('runs the periodic rescan on the injected clock and stops it on close', async () => {
    const sleepers: { ms: number; resolve: () => void; signal: AbortSignal | undefined }[] = [];
    const clock: Clock = {
      now: () => Date.now(),
      monotonic: () => performance.now(),
      sleep: (ms, signal) =>
        new Promise<void>((resolve, reject) => {
          sleepers.push({ ms, resolve, signal });
          signal?.addEventListener('abort', () => reject(abortReason(signal)), { once: true });
        }),
    };
    const h = await makeHarness({ polling: true, pollIntervalMs: 5_000, clock });
    await h.detector.start();
    await waitFor(() => sleepers.length === 1, { message: 'first sleep' });
    expect(sleepers[0]?.ms).toBe(5_000);

    const path = join(h.root.path, 'tick.jpg');
    await writeFile(path, 'x');
    sleepers[0]?.resolve();
    await waitFor(() => h.seen.has(path), { message: 'file found by the timed rescan' });
    await waitFor(() => sleepers.length === 2, { message: 'second sleep' });

    await h.detector.close();
    expect(sleepers[1]?.signal?.aborted).toBe(true);
  });
});

describe.skipIf(!canMount())('Detector: disks mounted into a watch folder', () => {
  /** With no periodic rescan: only the mount table can make the detector look. */
  const noRescans: Partial<DetectorOptions> = { rescanIntervalMs: 0 };

  /** Tells the detector of mount changes, as the daemon does; returns how many readings were made so far. */
  async function followMounts(h: Harness): Promise<() => number> {
    let reads = 0;
    const table = await MountTable.follow({
      read: () => {
        reads += 1;
        return readMountTable();
      },
      clock: systemClock,
      intervalMs: 50,
      onChange: (points) => h.detector.mountsChanged(points),
    });
    if (table === undefined) throw new Error('no mount table to read');
    cleanups.push(() => table.close());
    return () => reads;
  }

  /** A folder beside the root with a photo in it, as a card holds them. */
  async function makeDisk(h: Harness, photo: string): Promise<string> {
    const disk = join(h.outside, `disk-${basename(photo)}`);
    await mkdir(join(disk, dirname(photo)), { recursive: true });
    await writeFile(join(disk, photo), 'photo');
    return disk;
  }

  /** Mounts `disk` at `target`; returns what unmounts it. Unmounted at the latest before the test's folders are removed. */
  function mount(disk: string, target: string): () => void {
    bindMount(disk, target);
    let mounted = true;
    const unmountNow = (): void => {
      if (mounted) unmount(target);
      mounted = false;
    };
    cleanups.push(async () => unmountNow());
    return unmountNow;
  }

  it('walks a folder when a disk is mounted on it, and again when it is taken away', async () => {
    const h = await makeHarness(noRescans);
    const card = join(h.root.path, 'card');
    await mkdir(card);
    const disk = await makeDisk(h, 'DCIM/100CANON/IMG_0001.jpg');
    await followMounts(h);
    await h.detector.start();

    const takeAway = mount(disk, card);
    await waitFor(() => h.seen.has(join(card, 'DCIM', '100CANON', 'IMG_0001.jpg')), { message: 'the photo on the card' });
    // Its folders are watched now: a photo written to the card later is seen at once.
    await writeSentinel(h, join(card, 'DCIM', '100CANON'));

    // Taken away, the folder it covered is back, and watched again (the watches on the card are gone).
    takeAway();
    await writeSentinel(h, card);
  });

  it('leaves a disk mounted in a hidden folder alone, as the folder itself (a ZFS snapshot in .zfs)', async () => {
    const h = await makeHarness(noRescans);
    const reads = await followMounts(h);
    const snapshot = join(h.root.path, '.zfs', 'snapshot', 'daily');
    await mkdir(snapshot, { recursive: true });
    const disk = await makeDisk(h, 'IMG_0004.jpg');
    await h.detector.start();
    mount(disk, snapshot);
    // Two readings later the mount was seen, and a walk of it begun; the sentinels then take
    // longer than that walk's three file-system calls.
    const seenAt = reads();
    await waitFor(() => reads() >= seenAt + 2, { message: 'two readings of the mount table' });
    await writeSentinel(h);
    expect(seenPaths(h).filter((path) => path.includes('.zfs'))).toEqual([]);
  });

  it('walks a watch folder when a disk is mounted on it, or on a folder that holds it', async () => {
    const h = await makeHarness(noRescans);
    const disk = await makeDisk(h, 'IMG_0002.jpg');
    await followMounts(h);
    await h.detector.start();
    const takeAway = mount(disk, h.root.path);
    await waitFor(() => h.seen.has(join(h.root.path, 'IMG_0002.jpg')), { message: 'the photo on the disk' });
    await writeSentinel(h);
    takeAway();
    await writeSentinel(h);

    // /mnt/usb/photos watched, a disk mounted at /mnt/usb.
    const usb = join(h.outside, 'usb');
    await mkdir(join(usb, 'photos'), { recursive: true });
    const inUsb = await makeHarness(noRescans, { path: join(usb, 'photos'), archivePath: join(h.outside, 'archive') });
    const usbDisk = await makeDisk(h, 'photos/IMG_0003.jpg');
    await followMounts(inUsb);
    await inUsb.detector.start();
    mount(usbDisk, usb);
    await waitFor(() => inUsb.seen.has(join(usb, 'photos', 'IMG_0003.jpg')), { message: 'the photo on the USB disk' });
    await writeSentinel(inUsb);
  });
});

describe('Detector: close', () => {
  it('releases every watch handle and reports nothing afterwards', async () => {
    const before = await settledWatchHandles();
    const h = await makeHarness();
    await mkdir(join(h.root.path, 'a', 'b'), { recursive: true });
    await h.detector.start();
    expect(watchHandles()).toBe(before + 3);

    await h.detector.close();
    expect(h.detector.watchedFolderCount).toBe(0);
    // Handles finish closing on the next turn of the event loop.
    await waitFor(() => watchHandles() === before, { message: 'watch handles closed' });

    // A second detector on the same root sees the new file; the closed one must not.
    const count = h.candidates.length;
    const witness = await makeHarness({}, h.root);
    await witness.detector.start();
    const path = join(h.root.path, 'a', 'b', 'after-close.jpg');
    await writeFile(path, 'x');
    await waitFor(() => witness.seen.has(path), { message: 'witness saw the file' });
    await h.detector.rescan();
    expect(h.candidates.length).toBe(count);
    await h.detector.close(); // idempotent
  });
});
