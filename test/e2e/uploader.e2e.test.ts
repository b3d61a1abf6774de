import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { appendFile, chmod, mkdir, open, readdir, rename, rm, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startFakeImmich, type FakeAsset, type FakeImmich } from '../fakes/immich-server.js';
import { cliRunsAs, NOBODY, runCli, startCli, type CliRun } from '../helpers/cli.js';
import { readProblems } from '../../src/support/problems.js';
import { bindMount, canMount, remountReadOnly, remountReadWrite, unmount } from '../helpers/mount.js';
import { readIfExists, sha1, writeMedia } from '../helpers/media.js';
import { makeTempDir } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait-for.js';

/** A key distinctive enough that finding it anywhere in the output is never a coincidence. */
const KEY = 'e2e-secret-KEY-7f3a9c';

let temp: { path: string; remove: () => Promise<void> };
let watchDir: string;
let archiveDir: string;
let server: FakeImmich;
const running: CliRun[] = [];

beforeEach(async () => {
  temp = await makeTempDir('iau-e2e-');
  watchDir = join(temp.path, 'inbox');
  archiveDir = join(temp.path, 'archive');
  await mkdir(watchDir);
});

afterEach(async () => {
  for (const run of running.splice(0)) {
    run.child.kill('SIGKILL');
    await run.exited;
  }
  await server?.close();
  await temp.remove();
});

async function startServer(major: 2 | 3 = 3, permissions: string[] = ['asset.upload']): Promise<FakeImmich> {
  server = await startFakeImmich({ major, keys: { [KEY]: { name: 'e2e key', permissions } } });
  return server;
}

function env(extra: Record<string, string> = {}): Record<string, string> {
  return {
    IMMICH_API_URL: server.url,
    IMMICH_API_KEY: KEY,
    WATCH_DIRECTORIES: watchDir,
    ARCHIVE_DIRECTORY: archiveDir,
    STATE_DIRECTORY: join(temp.path, 'state'),
    FILE_STABILITY_WAIT_SECONDS: '0.3',
    FILE_STABILITY_CHECK_INTERVAL: '0.1',
    SHUTDOWN_GRACE_SECONDS: '5',
    ...extra,
  };
}

function watch(extra: Record<string, string> = {}): CliRun {
  const run = startCli(['watch'], { env: env(extra) });
  running.push(run);
  return run;
}

async function stopGracefully(run: CliRun): Promise<number | null> {
  run.child.kill('SIGTERM');
  const { code } = await run.exited;
  return code;
}

/**
 * The heart of every end-to-end test: each file is in the archive with exactly its bytes, gone
 * from the watch folder, and the server received exactly those bytes, once.
 */
async function expectUploadedAndArchived(files: Map<string, Buffer>, options: { uploaded?: boolean } = {}): Promise<void> {
  for (const [name, bytes] of files) {
    expect(existsSync(join(watchDir, name)), `${name} left the watch folder`).toBe(false);
    const archived = await readIfExists(join(archiveDir, name));
    expect(archived && sha1(archived), `${name} archived with its bytes`).toBe(sha1(bytes));
    const received = server.assets.filter((asset) => asset.checksum === sha1(bytes));
    expect(received, `${name} is on the server exactly once`).toHaveLength(1);
    if (options.uploaded !== false) {
      expect(received[0]?.size).toBe(bytes.length);
      expect(received[0]?.filename).toBe(name.split('/').pop());
    }
  }
}

/** The kinds of problem the running uploader says keep it from its work. */
function problemsNow(): string[] {
  return readProblems(join(temp.path, 'state')).map((problem) => problem.kind);
}

function expectNoSecret(...outputs: string[]): void {
  for (const output of outputs) expect(output).not.toContain(KEY);
}

interface UsbDisk {
  usb: string;
  /** The test hooks for fstab and the mount table, and the archive on the disk. */
  env: Record<string, string>;
  mount: () => Promise<void>;
  /** Takes the disk out of the mount table (the test removes what was on it). */
  unmount: () => Promise<void>;
}

/**
 * A USB disk mounted at `usb`, as the daemon sees it through the test hooks for fstab and the
 * mount table: by default listed in /etc/fstab and not mounted yet.
 */
async function usbDisk(options: { inFstab?: boolean; mounted?: boolean } = {}): Promise<UsbDisk> {
  const usb = join(temp.path, 'usb');
  await mkdir(usb);
  const fstab = join(temp.path, 'fstab');
  await writeFile(fstab, `UUID=1 / ext4 defaults 0 1
${options.inFstab === false ? '' : `UUID=2 ${usb} ext4 defaults,nofail 0 2
`}`);
  const table = join(temp.path, 'mountinfo');
  const rootOnly = '27 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n';
  const mounted = `${rootOnly}70 27 8:17 / ${usb} rw - ext4 /dev/sdb1 rw\n`;
  await writeFile(table, options.mounted === true ? mounted : rootOnly);
  return {
    usb,
    env: { ARCHIVE_DIRECTORY: join(usb, 'archive'), IMMICH_AUTO_UPLOADER_FSTAB: fstab, IMMICH_AUTO_UPLOADER_MOUNT_TABLE: table },
    mount: () => writeFile(table, mounted),
    unmount: () => writeFile(table, rootOnly),
  };
}

describe.each([2, 3] as const)('against an Immich %i.x server', (major) => {
  it('once: uploads 50 files in nested folders exactly once, archives them with their paths, exits 0', async () => {
    await startServer(major);
    const names = Array.from({ length: 50 }, (_, i) => `trip/day-${i % 5}/${i % 2 ? 'IMG' : 'vid'}_${i}.${i % 2 ? 'JPG' : 'mp4'}`);
    names.push('Été 2024 – 海.jpg');
    const files = await writeMedia(watchDir, names);
    const result = await runCli(['once'], { env: env() });
    expect(result.code, result.stdout + result.stderr).toBe(0);
    await expectUploadedAndArchived(files);
    expect(server.assets).toHaveLength(files.size);
    const fieldsSent = server.assets[0]?.fields ?? {};
    if (major === 2) expect(fieldsSent).toMatchObject({ deviceId: 'immich-auto-uploader' });
    else expect(fieldsSent).not.toHaveProperty('deviceAssetId');
    const summary = result.logs.find((line) => line.msg.startsWith('summary:'));
    expect(summary).toMatchObject({ uploaded: files.size, failed: 0 });
    // Quiet when all is well: no warning of Node's either (e.g. about listeners).
    expect(result.stderr).toBe('');
    expectNoSecret(result.stdout, result.stderr);
  });

  it("once: sends each photo's XMP sidecar with it, and moves the sidecar into the archive beside it", async () => {
    await startServer(major);
    const media = await writeMedia(watchDir, ['DCIM/IMG_1.CR2', 'DCIM/IMG_2.JPG', 'DCIM/IMG_3.HEIC', 'DCIM/IMG_3.MOV']);
    const sidecars = await writeMedia(watchDir, ['DCIM/IMG_1.CR2.xmp', 'DCIM/IMG_2.XMP', 'DCIM/IMG_3.xmp'], 400);
    const result = await runCli(['once'], { env: env({ SUPPORTED_EXTENSIONS: 'jpg,cr2,heic,mov' }) });
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(result.stderr).toBe('');
    await expectUploadedAndArchived(media);
    const sentWith = (photo: string): FakeAsset['sidecar'] => server.assetByChecksum(sha1(media.get(photo) ?? Buffer.alloc(0)))?.sidecar;
    expect(sentWith('DCIM/IMG_1.CR2')).toEqual({ filename: 'IMG_1.CR2.xmp', bytes: sidecars.get('DCIM/IMG_1.CR2.xmp') });
    expect(sentWith('DCIM/IMG_2.JPG')).toEqual({ filename: 'IMG_2.XMP', bytes: sidecars.get('DCIM/IMG_2.XMP') });
    // The live photo's two files share one sidecar: it goes with each, and into the archive with the last.
    expect(sentWith('DCIM/IMG_3.HEIC')?.filename).toBe('IMG_3.xmp');
    expect(sentWith('DCIM/IMG_3.MOV')?.filename).toBe('IMG_3.xmp');
    for (const [name, bytes] of sidecars) expect(await readIfExists(join(archiveDir, name)), name).toEqual(bytes);
    expect(await readdir(join(watchDir, 'DCIM'))).toEqual([]);
  });

  it('watch: a file copied in slowly is uploaded once, complete, after it settles', async () => {
    await startServer(major);
    const run = watch({ FILE_STABILITY_WAIT_SECONDS: '1' });
    await run.waitForLog((line) => line.msg.startsWith('watching'));
    const bytes = randomBytes(10 * 64 * 1024);
    const path = join(watchDir, 'slow.mov');
    for (let chunk = 0; chunk < 10; chunk++) {
      await appendFile(path, bytes.subarray(chunk * 64 * 1024, (chunk + 1) * 64 * 1024));
      // The writer is slow on purpose: a pause between chunks is the scenario under test.
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
    await waitFor(() => !existsSync(path), { timeoutMs: 20_000, message: 'the slow file to be archived' });
    await expectUploadedAndArchived(new Map([['slow.mov', bytes]]));
    expect(server.uploadCount).toBe(1);
    expect(await stopGracefully(run)).toBe(0);
  });
});

describe('watch', () => {
  it('finds a folder created with files already inside, and a file moved in from outside', async () => {
    await startServer();
    const run = watch();
    await run.waitForLog((line) => line.msg.startsWith('watching'));
    const names = Array.from({ length: 20 }, (_, i) => `new/deep/er/${i}.jpg`);
    const inside = await writeMedia(watchDir, names);
    const outside = join(temp.path, 'elsewhere');
    const moved = await writeMedia(outside, ['moved.png', 'folder/in-folder.jpg']);
    await rename(join(outside, 'moved.png'), join(watchDir, 'moved.png'));
    await rename(join(outside, 'folder'), join(watchDir, 'folder'));
    const all = new Map([...inside, ...moved]);
    await waitFor(() => server.assets.length === all.size && [...all.keys()].every((n) => !existsSync(join(watchDir, n))), {
      timeoutMs: 20_000,
      message: 'every file uploaded and archived',
    });
    await expectUploadedAndArchived(all);
    expect(await stopGracefully(run)).toBe(0);
    expectNoSecret(run.stdout(), run.stderr());
  });

  it.skipIf(!canMount())('uploads what is on a card mounted into the watch folder, and empties the card', async () => {
    await startServer();
    const card = join(watchDir, 'card');
    await mkdir(card);
    const run = watch();
    await run.waitForLog((line) => line.msg.startsWith('watching'));
    const onCard = join(temp.path, 'card-contents');
    const files = await writeMedia(onCard, ['DCIM/100CANON/IMG_0001.jpg', 'DCIM/100CANON/IMG_0002.jpg', 'DCIM/101CANON/MVI_0003.mp4']);
    // Taken an hour ago. A photo written a moment ago would be held open for a while after it
    // went (late writes), and the card could not be unmounted meanwhile; a real card is removable
    // media, where nothing is held (not so this bind mount).
    const hourAgo = new Date(Date.now() - 60 * 60_000);
    for (const name of files.keys()) await utimes(join(onCard, name), hourAgo, hourAgo);
    bindMount(onCard, card);
    try {
      await waitFor(() => server.assets.length === files.size && [...files.keys()].every((name) => !existsSync(join(onCard, name))), {
        timeoutMs: 20_000,
        message: 'every file on the card uploaded and archived',
      });
    } finally {
      unmount(card);
    }
    await expectUploadedAndArchived(new Map([...files].map(([name, bytes]) => [`card/${name}`, bytes])));
    expect(await stopGracefully(run)).toBe(0);
  });

  it.skipIf(!canMount())('says once, and shows in status and health, that the archive\'s disk became read-only, leaving the uploaded files in place', async () => {
    await startServer();
    await mkdir(archiveDir);
    // The archive's disk, which the kernel remounts read-only after errors.
    bindMount(archiveDir, archiveDir);
    try {
      const run = watch();
      await run.waitForLog((line) => line.msg.startsWith('watching'));
      remountReadOnly(archiveDir);
      const files = await writeMedia(watchDir, ['a.jpg', 'b.jpg']);
      await run.waitForLog((line) => line.msg.startsWith('the disk of ARCHIVE_DIRECTORY'));
      await waitFor(() => run.logs().filter((line) => line.level === 50).length === 2, { message: "each file's failure" });
      expect(run.logs().filter((line) => line.level === 40).map((line) => line.msg)).toEqual([
        `the disk of ARCHIVE_DIRECTORY ${archiveDir} is read-only (EROFS): uploaded files stay in the watch folder until it takes them (fix: mount it read-write)`,
      ]);
      expect(run.logs().filter((line) => line.level === 50).map((line) => line.msg).sort()).toEqual(
        ['a.jpg', 'b.jpg'].map(
          (name) =>
            `failed ${name}: archive failed at move of ${join(watchDir, name)}: EROFS: the archive's disk is mounted read-only; the file stays in the watch folder (fix: mount it read-write)`,
        ),
      );
      expect(problemsNow(), 'for `status` and `health`').toEqual(['archive-full']);
      const health = await runCli(['health', '--grace', '0'], { env: env() });
      expect([health.code, health.stdout]).toEqual([1, expect.stringMatching(/^unhealthy: the disk of ARCHIVE_DIRECTORY .* is read-only \(EROFS\)/) as string]);
      for (const [name, bytes] of files) expect(await readIfExists(join(watchDir, name)), name).toEqual(bytes);
      expect(server.assets).toHaveLength(2);
      expect(await stopGracefully(run)).toBe(0);
    } finally {
      unmount(archiveDir);
    }
  });

  it.skipIf(!canMount())('uploads a locked card once and leaves it as it is, then empties it once it is unlocked', async () => {
    await startServer();
    const card = join(watchDir, 'card');
    await mkdir(card);
    const onCard = join(temp.path, 'card-contents');
    const files = await writeMedia(onCard, ['DCIM/100CANON/IMG_0001.jpg', 'DCIM/100CANON/IMG_0002.jpg', 'DCIM/101CANON/MVI_0003.mp4']);
    const hourAgo = new Date(Date.now() - 60 * 60_000);
    for (const name of files.keys()) await utimes(join(onCard, name), hourAgo, hourAgo);
    const leftOnCard = (): boolean => [...files.keys()].every((name) => existsSync(join(onCard, name)));
    const warnings = (logs: Array<{ level: number; msg: string }>): string[] =>
      logs.filter((line) => line.level >= 40).map((line) => line.msg.split(':')[0] ?? '').sort();
    const foldersLeft = ['the originals in card/DCIM/100CANON stay there', 'the originals in card/DCIM/101CANON stay there'];
    // The card's lock switch on: the kernel mounts it read-only.
    bindMount(onCard, card);
    try {
      remountReadOnly(card);
      const once = await runCli(['once'], { env: env() });
      expect(once.code, 'once: not every original could be archived').toBe(1);
      expect(once.logs.find((line) => line.msg.startsWith('summary:'))).toMatchObject({ uploaded: 3, failed: 0, left: 3 });
      expect(warnings(once.logs), 'one warning per folder').toEqual(foldersLeft);
      expect(leftOnCard()).toBe(true);
      const archived = existsSync(archiveDir) ? await readdir(archiveDir, { recursive: true, withFileTypes: true }) : [];
      expect(archived.filter((entry) => !entry.isDirectory()), 'nothing copied into the archive').toEqual([]);
      expect(server.assets).toHaveLength(3);
      const photo = join(card, 'DCIM/100CANON/IMG_0001.jpg');
      const why = `left in place: ${join(card, 'DCIM/100CANON')} is on a read-only file system`;
      expect((await runCli(['status'], { env: env() })).stdout).toContain(`kept      ${photo} (${why})`);
      expect((await runCli(['history', photo], { env: env() })).stdout).toContain(`original ${why}\n`);

      // A daemon, started later, finds them still locked: not uploaded again, still left.
      const run = watch({ RESCAN_INTERVAL_SECONDS: '1' });
      await waitFor(() => warnings(run.logs()).length === 2, { message: 'the folders left again' });
      expect(warnings(run.logs())).toEqual(foldersLeft);
      expect(server.assets).toHaveLength(3);
      expect(leftOnCard()).toBe(true);

      // Unlocked (here: made writable while mounted): the next rescan sends them on.
      remountReadWrite(card);
      await waitFor(() => [...files.keys()].every((name) => !existsSync(join(onCard, name))), { timeoutMs: 20_000, message: 'the card emptied' });
      await expectUploadedAndArchived(new Map([...files].map(([name, bytes]) => [`card/${name}`, bytes])));
      expect(await stopGracefully(run)).toBe(0);
      expectNoSecret(once.stdout, once.stderr, run.stdout(), run.stderr());
    } finally {
      unmount(card);
    }
  });

  it.skipIf(!canMount())('leaves files in place while the archive disk is away, never making the archive on the disk beneath', async () => {
    await startServer();
    const usb = join(temp.path, 'usb');
    const disk = join(temp.path, 'disk');
    await mkdir(usb);
    await mkdir(disk);
    bindMount(disk, usb);
    let mounted = true;
    try {
      const run = watch({ ARCHIVE_DIRECTORY: join(usb, 'archive') });
      await run.waitForLog((line) => line.msg.startsWith('watching'));
      const before = await writeMedia(watchDir, ['before.jpg']);
      await waitFor(() => existsSync(join(disk, 'archive', 'before.jpg')), { message: 'before.jpg archived on the disk' });
      // Its archive done (the folder's fsync included): the disk is not busy any more.
      await run.waitForLog((line) => line.msg.startsWith('uploaded before.jpg'));

      unmount(usb);
      mounted = false;
      // Seen, so that the mount made again below is a change (it may get the same mount ID).
      await run.waitForLog((line) => line.msg === 'mounts changed' && JSON.stringify(line).includes(usb), { message: 'the unmount seen' });
      await run.waitForLog((line) => line.level === 40 && line.msg.startsWith(`The disk of the archive folder ${join(usb, 'archive')} (mounted at ${usb}) is gone`));
      const away = await writeMedia(watchDir, ['while-away.jpg']);
      await run.waitForLog((line) => line.msg === "waiting for the archive's disk" && line.file === join(watchDir, 'while-away.jpg'));
      expect(server.assets, 'nothing uploaded while its original could not be archived').toHaveLength(1);
      expect(existsSync(join(watchDir, 'while-away.jpg')), 'the original waits in the watch folder').toBe(true);
      expect(await readdir(usb), 'nothing made on the disk beneath').toEqual([]);
      expect(problemsNow(), 'for `status` and `health`').toEqual(['archive-disk']);

      // The disk is back: the file goes on at once.
      bindMount(disk, usb);
      mounted = true;
      await waitFor(() => !existsSync(join(watchDir, 'while-away.jpg')), { message: 'while-away.jpg archived', timeoutMs: 15_000 });
      archiveDir = join(usb, 'archive');
      await expectUploadedAndArchived(new Map([...before, ...away]));
      expect(problemsNow()).toEqual([]);
      expect(await stopGracefully(run)).toBe(0);
    } finally {
      if (mounted) unmount(usb);
    }
  });

  it.skipIf(!canMount())('archives nothing into the empty folder that a disk mounted at the archive folder leaves when it goes', async () => {
    await startServer();
    const disk = join(temp.path, 'disk');
    await mkdir(disk);
    await mkdir(archiveDir);
    bindMount(disk, archiveDir);
    let mounted = true;
    try {
      const run = watch();
      await run.waitForLog((line) => line.msg.startsWith('watching'));
      const before = await writeMedia(watchDir, ['before.jpg']);
      await waitFor(() => existsSync(join(disk, 'before.jpg')), { message: 'before.jpg archived on the disk' });
      await run.waitForLog((line) => line.msg.startsWith('uploaded before.jpg'));

      unmount(archiveDir);
      mounted = false;
      await run.waitForLog((line) => line.level === 40 && line.msg.startsWith(`The disk of the archive folder ${archiveDir} (mounted at ${archiveDir}) is gone`));
      const away = await writeMedia(watchDir, ['while-away.jpg']);
      await run.waitForLog((line) => line.msg === "waiting for the archive's disk" && line.file === join(watchDir, 'while-away.jpg'));
      expect(server.assets).toHaveLength(1);
      expect(existsSync(join(watchDir, 'while-away.jpg')), 'the original waits in the watch folder').toBe(true);
      expect(await readdir(archiveDir), 'nothing put in the folder beneath').toEqual([]);

      bindMount(disk, archiveDir);
      mounted = true;
      await waitFor(() => !existsSync(join(watchDir, 'while-away.jpg')), { message: 'while-away.jpg archived', timeoutMs: 15_000 });
      await expectUploadedAndArchived(new Map([...before, ...away]));
      expect(await stopGracefully(run)).toBe(0);

      // Started again with the disk away, the uploader waits for it rather than fill the empty folder.
      unmount(archiveDir);
      mounted = false;
      const again = watch();
      await again.waitForLog((line) => line.level === 40 && line.msg.startsWith(`ARCHIVE_DIRECTORY ${archiveDir} was on the disk mounted at ${archiveDir}`));
      expect(await stopGracefully(again)).toBe(0);
    } finally {
      if (mounted) unmount(archiveDir);
    }
  });

  it('warns at start of a watch folder on a network share, unless WATCH_POLLING is on', async () => {
    await startServer();
    const table = join(temp.path, 'mountinfo');
    await writeFile(table, `27 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n60 27 0:50 / ${watchDir} rw,relatime - nfs4 nas:/photos rw\n`);
    const onShare = (line: { msg: string }): boolean => line.msg.includes('is on a network share (nfs4)');

    const polling = watch({ IMMICH_AUTO_UPLOADER_MOUNT_TABLE: table, WATCH_POLLING: 'true' });
    await polling.waitForLog((line) => line.msg.startsWith('watching'));
    expect(polling.logs().filter(onShare)).toEqual([]);
    expect(await stopGracefully(polling)).toBe(0);

    const watching = watch({ IMMICH_AUTO_UPLOADER_MOUNT_TABLE: table });
    await watching.waitForLog((line) => line.msg.startsWith('watching'));
    expect(watching.logs().filter(onShare)).toMatchObject([{ level: 40, msg: expect.stringContaining('Set WATCH_POLLING=true') as unknown }]);
    expect(await stopGracefully(watching)).toBe(0);
  });

  it('waits for an archive disk that /etc/fstab mounts and is not mounted yet, then goes on', async () => {
    await startServer();
    const disk = await usbDisk();
    archiveDir = join(disk.usb, 'archive');
    const files = await writeMedia(watchDir, ['IMG_0001.jpg']);
    const run = watch(disk.env);
    await run.waitForLog(
      (line) => line.level === 40 && line.msg === `ARCHIVE_DIRECTORY ${archiveDir} is on ${disk.usb}, which /etc/fstab mounts, but nothing is mounted there: waiting for it before anything is uploaded (mount it (mount ${disk.usb}))`,
    );
    expect(existsSync(archiveDir), 'no archive made on the disk beneath').toBe(false);
    expect(problemsNow(), 'for `status` and `health`').toEqual(['archive-disk']);

    await disk.mount();
    await run.waitForLog((line) => line.msg === `ARCHIVE_DIRECTORY ${archiveDir} is available: going on`);
    await waitFor(() => !existsSync(join(watchDir, 'IMG_0001.jpg')), { message: 'IMG_0001.jpg archived' });
    await expectUploadedAndArchived(files);
    expect(problemsNow()).toEqual([]);
    expect(await stopGracefully(run)).toBe(0);
  });

  it('uploads from a watch folder on a disk that /etc/fstab mounts once the disk is mounted', async () => {
    await startServer();
    const disk = await usbDisk();
    watchDir = join(disk.usb, 'photos');
    const run = watch({ ...disk.env, ARCHIVE_DIRECTORY: archiveDir });
    await run.waitForLog((line) => line.msg.startsWith('watching'));
    // Said once, as a warning: the detector does not call it an error again.
    expect(run.logs().filter((line) => line.level >= 40 && line.msg.includes(watchDir))).toEqual([
      expect.objectContaining({
        level: 40,
        msg: `WATCH_DIRECTORIES ${watchDir} is on ${disk.usb}, which /etc/fstab mounts, but nothing is mounted there: its files are uploaded once it is mounted`,
      }),
    ]);

    const files = await writeMedia(watchDir, ['DCIM/IMG_0001.jpg']);
    await disk.mount();
    await run.waitForLog((line) => line.msg === `Watch folder ${watchDir} is back; detecting files in it again`);
    await waitFor(() => !existsSync(join(watchDir, 'DCIM/IMG_0001.jpg')), { message: 'IMG_0001.jpg archived' });
    await expectUploadedAndArchived(files);
    expect(await stopGracefully(run)).toBe(0);
  });

  it('moves a sidecar that arrives after its photo went into the archive beside it, and warns that Immich did not get it', async () => {
    await startServer();
    // The archive already holds another IMG_1.JPG: the photo is archived as IMG_1 (1).JPG.
    await writeMedia(archiveDir, ['card/IMG_1.JPG']);
    const run = watch();
    await run.waitForLog((line) => line.msg.startsWith('watching'));
    const photos = await writeMedia(watchDir, ['card/IMG_1.JPG', 'card/IMG_2.JPG']);
    await waitFor(() => server.assets.length === 2 && !existsSync(join(watchDir, 'card/IMG_1.JPG')) && !existsSync(join(watchDir, 'card/IMG_2.JPG')), {
      timeoutMs: 20_000,
      message: 'both photos uploaded and archived',
    });
    const sidecars = await writeMedia(watchDir, ['card/IMG_1.JPG.xmp', 'card/IMG_2.XMP'], 300);
    for (const name of sidecars.keys()) {
      const line = await run.waitForLog((entry) => entry.file === name && /arrived after/.test(entry.msg), { message: `the warning about ${name}` });
      expect(line.level).toBe(40);
    }
    expect(await readIfExists(join(archiveDir, 'card/IMG_1 (1).JPG.xmp'))).toEqual(sidecars.get('card/IMG_1.JPG.xmp'));
    expect(await readIfExists(join(archiveDir, 'card/IMG_2.XMP'))).toEqual(sidecars.get('card/IMG_2.XMP'));
    expect(await readdir(join(watchDir, 'card'))).toEqual([]);
    // Nothing more went to the server: a sidecar is never an asset of its own.
    expect(server.uploadCount).toBe(2);
    for (const bytes of photos.values()) expect(server.assetByChecksum(sha1(bytes))?.sidecar).toBeUndefined();
    expect(await stopGracefully(run)).toBe(0);
    expect(run.stderr()).toBe('');
  });

  it('moves a sidecar written while its photo was uploaded after the photo, without waiting for a rescan', async () => {
    await startServer();
    server.delayNext(1, 1500, { path: '/api/assets', exact: true });
    const run = watch({ RESCAN_INTERVAL_SECONDS: '3600', LOG_LEVEL: 'trace' });
    await run.waitForLog((line) => line.msg.startsWith('watching'));
    await writeMedia(watchDir, ['IMG_1.JPG']);
    await run.waitForLog((line) => line.state === 'uploading');
    const sidecars = await writeMedia(watchDir, ['IMG_1.JPG.xmp'], 300);
    await run.waitForLog((line) => line.file === 'IMG_1.JPG.xmp' && /arrived after/.test(line.msg), { message: 'the sidecar moved after its photo' });
    expect(await readIfExists(join(archiveDir, 'IMG_1.JPG.xmp'))).toEqual(sidecars.get('IMG_1.JPG.xmp'));
    expect(await readdir(watchDir)).toEqual([]);
    expect(await stopGracefully(run)).toBe(0);
  });

  it('delete mode: leaves a sidecar that arrives after its photo was deleted, with one warning', async () => {
    await startServer();
    const run = watch({ AFTER_UPLOAD: 'delete', WATCH_POLLING: 'true', WATCH_POLL_INTERVAL_SECONDS: '0.2' });
    await run.waitForLog((line) => line.msg.startsWith('watching'));
    await writeMedia(watchDir, ['IMG_1.JPG']);
    await waitFor(() => server.assets.length === 1 && !existsSync(join(watchDir, 'IMG_1.JPG')), { timeoutMs: 20_000, message: 'the photo uploaded and deleted' });
    const sidecars = await writeMedia(watchDir, ['IMG_1.JPG.xmp'], 300);
    await run.waitForLog((line) => line.file === 'IMG_1.JPG.xmp' && /it stays here/.test(line.msg));
    // A photo written now is seen, settled and uploaded over several polls, each of which sees
    // the sidecar again: still one warning, and the sidecar stays.
    await writeMedia(watchDir, ['IMG_2.JPG']);
    await waitFor(() => server.assets.length === 2 && !existsSync(join(watchDir, 'IMG_2.JPG')), { timeoutMs: 20_000, message: 'the second photo uploaded and deleted' });
    expect(run.logs().filter((line) => line.file === 'IMG_1.JPG.xmp' && line.level === 40)).toHaveLength(1);
    expect(await readIfExists(join(watchDir, 'IMG_1.JPG.xmp'))).toEqual(sidecars.get('IMG_1.JPG.xmp'));
    expect(await stopGracefully(run)).toBe(0);
  });

  for (const mode of ['move', 'delete', 'keep'] as const) {
    it(`${mode} mode: a file written to again after it was uploaded gets to the server complete, with its sidecar, and the first upload is named`, async () => {
      await startServer();
      const run = watch({ AFTER_UPLOAD: mode });
      await run.waitForLog((line) => line.msg.startsWith('watching'));
      const path = join(watchDir, 'VID_1.MP4');
      const xmp = Buffer.from('<x:xmpmeta rating="4"/>');
      await writeFile(`${path}.xmp`, xmp);
      // Keep mode leaves the original where it is; the others take it away.
      const taken = (): boolean => mode === 'keep' || !existsSync(path);
      const [first, rest] = [randomBytes(300_000), randomBytes(200_000)];
      const writer = await open(path, 'w');
      try {
        await writer.write(first);
        // The program pauses for longer than the window: what it wrote so far is uploaded and taken care of.
        await waitFor(() => server.assets.length === 1 && taken(), { timeoutMs: 20_000, message: 'the first part uploaded' });
        await writer.write(rest);
      } finally {
        await writer.close();
      }
      const whole = Buffer.concat([first, rest]);
      await waitFor(() => server.assetByChecksum(sha1(whole)) !== undefined && taken(), { timeoutMs: 20_000, message: 'the complete file uploaded' });
      const warning = await run.waitForLog((line) => line.level === 40 && /written to again after it was uploaded/.test(line.msg));
      expect(warning.assetId).toBe(server.assetByChecksum(sha1(first))?.id);
      expect(server.assets).toHaveLength(2);
      for (const part of [first, whole]) expect(server.assetByChecksum(sha1(part))?.sidecar).toEqual({ filename: 'VID_1.MP4.xmp', bytes: xmp });
      if (mode === 'move') expect(await readIfExists(join(archiveDir, 'VID_1.MP4'))).toEqual(whole);
      if (mode === 'keep') expect(await readIfExists(path)).toEqual(whole);
      expect(await stopGracefully(run)).toBe(0);
      // Said once.
      expect(run.logs().filter((line) => line.level === 40)).toHaveLength(1);
    });
  }

  for (const mode of ['move', 'delete'] as const) {
    it(`${mode} mode: a file written again from its start after it was uploaded gets to the server complete, and the first upload is named`, async () => {
      await startServer();
      const run = watch({ AFTER_UPLOAD: mode });
      await run.waitForLog((line) => line.msg.startsWith('watching'));
      const path = join(watchDir, 'SCAN_1.JPG');
      const [first, rest] = [randomBytes(300_000), randomBytes(200_000)];
      await writeFile(path, first);
      await waitFor(() => server.assets.length === 1 && !existsSync(path), { timeoutMs: 20_000, message: 'the first part uploaded' });
      // The program saves the whole file again, at the same path.
      const whole = Buffer.concat([first, rest]);
      await writeFile(path, whole);
      await waitFor(() => server.assetByChecksum(sha1(whole)) !== undefined && !existsSync(path), { timeoutMs: 20_000, message: 'the complete file uploaded' });
      const warning = await run.waitForLog((line) => line.level === 40 && /written again from its start/.test(line.msg));
      expect(warning.assetId).toBe(server.assetByChecksum(sha1(first))?.id);
      expect(server.assets).toHaveLength(2);
      if (mode === 'move') expect(await readIfExists(join(archiveDir, 'SCAN_1 (1).JPG'))).toEqual(whole);
      expect(await stopGracefully(run)).toBe(0);
      expect(run.logs().filter((line) => line.level === 40)).toHaveLength(1);
    });
  }

  it('MAX_FILE_SIZE_MB: skips a file that grew past the limit after it was first seen', async () => {
    await startServer();
    const run = watch({ MAX_FILE_SIZE_MB: '1', LOG_LEVEL: 'trace', FILE_STABILITY_WAIT_SECONDS: '1' });
    await run.waitForLog((line) => line.msg.startsWith('watching'));
    const path = join(watchDir, 'clip.mp4');
    const writer = await open(path, 'w');
    try {
      await writer.write(randomBytes(600_000));
      await run.waitForLog((line) => line.file === path && line.msg === 'settling', { message: 'the file seen while small' });
      await writer.write(randomBytes(900_000));
    } finally {
      await writer.close();
    }
    const skipped = await run.waitForLog((line) => line.msg.startsWith('skipped clip.mp4'));
    expect(skipped.msg).toBe('skipped clip.mp4: it is 1.431 MB (1500000 bytes), over MAX_FILE_SIZE_MB=1; raise it to upload the file');
    expect(server.assets).toHaveLength(0);
    expect(existsSync(path)).toBe(true);
    expect(await stopGracefully(run)).toBe(0);
    // As the warning says: with the limit raised, the file goes.
    const raised = await runCli(['once'], { env: env({ MAX_FILE_SIZE_MB: '2' }) });
    expect(raised.code).toBe(0);
    expect(server.assets).toHaveLength(1);
    expect(existsSync(path)).toBe(false);
  });

  it('REMOVE_EMPTY_FOLDERS: removes a folder it emptied, quietly, and still sees a new one of the same name', async () => {
    await startServer();
    const run = watch({ REMOVE_EMPTY_FOLDERS: 'true' });
    await run.waitForLog((line) => line.msg.startsWith('watching'));
    const first = await writeMedia(watchDir, ['card/DCIM/IMG_1.JPG']);
    await waitFor(() => !existsSync(join(watchDir, 'card')), { timeoutMs: 20_000, message: 'the emptied folders removed' });
    // The same names again, as the next card brings them.
    const second = await writeMedia(watchDir, ['card/DCIM/IMG_2.JPG']);
    await waitFor(() => !existsSync(join(watchDir, 'card')), { timeoutMs: 20_000, message: 'the emptied folders removed again' });
    await expectUploadedAndArchived(new Map([...first, ...second]));
    expect(await readdir(watchDir)).toEqual([]);
    expect(await stopGracefully(run)).toBe(0);
    expect(run.logs().filter((line) => line.level >= 40)).toEqual([]);
    expect(run.stderr()).toBe('');
  });

  it('REMOVE_EMPTY_FOLDERS: a folder emptied just before a stop is removed after the next start', async () => {
    await startServer();
    // A long grace, so that the stop comes while the folder waits.
    const extra = { REMOVE_EMPTY_FOLDERS: 'true', FILE_STABILITY_WAIT_SECONDS: '2' };
    const run = watch(extra);
    await run.waitForLog((line) => line.msg.startsWith('watching'));
    const files = await writeMedia(watchDir, ['card/DCIM/IMG_1.JPG']);
    await waitFor(() => existsSync(join(archiveDir, 'card/DCIM/IMG_1.JPG')), { timeoutMs: 20_000, message: 'the photo archived' });
    expect(await stopGracefully(run)).toBe(0);
    expect(await readdir(join(watchDir, 'card/DCIM'))).toEqual([]);
    const again = await runCli(['once'], { env: env(extra) });
    expect(again.code).toBe(0);
    expect(await readdir(watchDir)).toEqual([]);
    await expectUploadedAndArchived(files);
    expect(again.stderr).toBe('');
  });

  it('waits for a server that is down at start, then uploads when it comes up', async () => {
    await startServer();
    await server.down();
    const files = await writeMedia(watchDir, ['early.jpg']);
    const run = watch();
    await run.waitForLog((line) => /not answering \(cannot reach the Immich server at .*\)/.test(line.msg));
    await server.up();
    await waitFor(() => server.assets.length === 1 && !existsSync(join(watchDir, 'early.jpg')), {
      timeoutMs: 30_000,
      message: 'the file to be uploaded once the server is up',
    });
    await expectUploadedAndArchived(files);
    expect(await stopGracefully(run)).toBe(0);
  });

  it("waits at start for a proxy answering 404 while Immich's container is made anew, then uploads", async () => {
    await startServer();
    // Traefik's answer to every path while Immich has no container: the version and a ping, twice.
    server.failNext(4, 404, { path: '/api/server/', message: '404 page not found' });
    const files = await writeMedia(watchDir, ['early.jpg']);
    const run = watch();
    await run.waitForLog((line) => line.msg.startsWith('cannot reach the Immich server yet (GET /api/server/version answered 404'));
    await waitFor(() => server.assets.length === 1 && !existsSync(join(watchDir, 'early.jpg')), {
      timeoutMs: 30_000,
      message: 'the file to be uploaded once the proxy reaches Immich',
    });
    await expectUploadedAndArchived(files);
    expect(await stopGracefully(run)).toBe(0);
  });

  it('stops at start on an address that answers 404 to everything, after a while, with the fix', async () => {
    await startServer();
    server.failNext(1000, 404, { path: '/api/', message: '404 page not found' });
    const result = await runCli(['watch'], { env: env({ IMMICH_AUTO_UPLOADER_ONCE_PATIENCE_MS: '1500' }) });
    expect(result.code).toBe(1);
    expect(result.logs.at(-1)?.msg).toMatch(/^GET \/api\/server\/version answered 404: 404 page not found; fix: set IMMICH_API_URL to the address you open Immich at in a browser$/);
  });

  it("stops at start on Immich's own 404 for its version (another path), with the fix", async () => {
    await startServer();
    server.failNext(1, 404, { path: '/api/server/version', exact: true });
    const result = await runCli(['watch'], { env: env() });
    expect(result.code).toBe(1);
    expect(result.logs.at(-1)?.msg).toMatch(/GET \/api\/server\/version answered 404: .*; fix: set IMMICH_API_URL to the address you open Immich at in a browser$/);
  });

  it('once: waits at start for a server that is down as long as its patience, then exits 1 touching nothing', async () => {
    await startServer();
    await server.down();
    const files = await writeMedia(watchDir, ['early.jpg']);
    const result = await runCli(['once'], { env: env({ IMMICH_AUTO_UPLOADER_ONCE_PATIENCE_MS: '1500' }) });
    expect(result.code).toBe(1);
    expect(result.logs.filter((line) => line.level >= 40).map((line) => line.msg)).toEqual([
      expect.stringMatching(/^Immich server is not answering \(cannot reach the Immich server at .*\); uploads wait until it does$/),
      expect.stringMatching(/^the Immich server did not answer for 1.5 s \(.*\): stopping; the files not done stay for the next run$/),
      'gave up waiting for the Immich server: nothing was uploaded, the next run tries again',
    ]);
    expect(await readIfExists(join(watchDir, 'early.jpg'))).toEqual(files.get('early.jpg'));
  });

  it('sends the fields of the version Immich comes back with after a restart (rolled back from 3.x to 2.x)', async () => {
    await startServer(3);
    const run = watch();
    await run.waitForLog((line) => line.msg.startsWith('watching'));
    await server.down();
    server.setMajor(2);
    const files = await writeMedia(watchDir, ['after-rollback.jpg']);
    await run.waitForLog((line) => line.msg.startsWith('Immich server is not answering'));
    await server.up();
    await waitFor(() => !existsSync(join(watchDir, 'after-rollback.jpg')), { timeoutMs: 30_000, message: () => `the file uploaded and archived; ${JSON.stringify(run.logs().map((l) => l.msg))}` });
    await expectUploadedAndArchived(files);
    expect(run.logs().some((line) => /^the Immich server is now 2\./.test(line.msg))).toBe(true);
    expect(await stopGracefully(run)).toBe(0);
  });

  it('SIGTERM during an upload leaves that file in place and unarchived, and exits 0', async () => {
    await startServer();
    server.delayNext(1, 60_000, { path: '/api/assets', exact: true });
    const files = await writeMedia(watchDir, ['big.mp4'], 256 * 1024);
    const run = watch({ SHUTDOWN_GRACE_SECONDS: '0.5', LOG_LEVEL: 'trace' });
    await run.waitForLog((line) => line.state === 'uploading');
    expect(await stopGracefully(run)).toBe(0);
    expect((await readIfExists(join(watchDir, 'big.mp4')))?.equals(files.get('big.mp4') ?? Buffer.alloc(0))).toBe(true);
    expect(existsSync(join(archiveDir, 'big.mp4'))).toBe(false);
    expect(run.logs().find((line) => line.msg.startsWith('summary:'))?.msg).toMatch(/, 1 stopped on their way \(they stay for the next run\)$/);
  });
});

describe('watch: a second signal', () => {
  it('exits at once, still leaving the unconfirmed file in place', async () => {
    await startServer();
    server.delayNext(1, 60_000, { path: '/api/assets', exact: true });
    await writeMedia(watchDir, ['slow-server.jpg']);
    const run = watch({ SHUTDOWN_GRACE_SECONDS: '60', LOG_LEVEL: 'trace' });
    await run.waitForLog((line) => line.state === 'uploading');
    run.child.kill('SIGTERM');
    await run.waitForLog((line) => line.msg.includes('stopping'));
    run.child.kill('SIGTERM');
    // Well inside the 60 s grace period: the second signal did not wait for it.
    const exited = await waitFor(() => run.child.exitCode !== null || run.child.signalCode !== null, {
      timeoutMs: 10_000,
      message: 'the process to exit after the second signal',
    }).then(() => run.exited);
    expect(exited.code).toBe(0);
    expect(existsSync(join(watchDir, 'slow-server.jpg'))).toBe(true);
    expect(existsSync(join(archiveDir, 'slow-server.jpg'))).toBe(false);
    // The counts as it leaves: the file cut short is still on its way.
    expect(run.logs().find((line) => line.msg.startsWith('summary:'))).toMatchObject({ uploaded: 0, queued: 1 });
  });
});

describe('once', () => {
  it('stopped before it finished, exits 1, leaving the file it was uploading in place', async () => {
    await startServer();
    server.delayNext(1, 60_000, { path: '/api/assets', exact: true });
    const files = await writeMedia(watchDir, ['cut-short.jpg']);
    const run = startCli(['once'], { env: env({ SHUTDOWN_GRACE_SECONDS: '0.5', LOG_LEVEL: 'trace' }) });
    running.push(run);
    await run.waitForLog((line) => line.state === 'uploading');
    expect(await stopGracefully(run), 'not "all well" for the script that runs it').toBe(1);
    expect(await readIfExists(join(watchDir, 'cut-short.jpg'))).toEqual(files.get('cut-short.jpg'));
    expect(existsSync(join(archiveDir, 'cut-short.jpg'))).toBe(false);
  });

  it('gives up on a server that stopped answering during the run: exits 1 soon, leaving every file not done in place', async () => {
    await startServer();
    // The first upload is held until the server goes away, which drops it.
    server.delayNext(1, 60_000, { path: '/api/assets', exact: true });
    const files = await writeMedia(watchDir, ['a.jpg', 'b.jpg', 'c.jpg', 'd.jpg', 'e.jpg', 'f.jpg']);
    const run = startCli(['once'], { env: env({ IMMICH_AUTO_UPLOADER_ONCE_PATIENCE_MS: '1000', LOG_LEVEL: 'trace' }) });
    running.push(run);
    await run.waitForLog((line) => line.state === 'uploading');
    await server.down();
    const { code } = await run.exited;
    expect(code).toBe(1);
    // Each file is either uploaded and archived (before the server went) or in place, whole.
    const archived = new Set(existsSync(archiveDir) ? await readdir(archiveDir) : []);
    expect(archived.size, 'the upload the server dropped, at least, was not done').toBeLessThan(files.size);
    for (const [name, bytes] of files) {
      if (archived.has(name)) await expectUploadedAndArchived(new Map([[name, bytes]]));
      else expect(await readIfExists(join(watchDir, name)), name).toEqual(bytes);
    }
    const warnings = run.logs().filter((line) => line.level >= 40).map((line) => line.msg);
    expect(warnings).toEqual([
      expect.stringMatching(/^Immich server is not answering/),
      expect.stringMatching(/^the Immich server did not answer for 1 s \(.*\): stopping; the files not done stay for the next run$/),
    ]);
    expect(run.logs().find((line) => line.msg.startsWith('summary:'))).toMatchObject({ uploaded: archived.size, interrupted: 6 - archived.size });
  });

  it('no longer counts as failed a failed file that was removed since', async () => {
    await startServer();
    await writeFile(join(watchDir, 'notes.txt'), 'not a photo');
    const first = await runCli(['once'], { env: env({ SUPPORTED_EXTENSIONS: 'jpg,txt' }) });
    expect(first.code).toBe(1);
    await rm(join(watchDir, 'notes.txt'));
    const second = await runCli(['once'], { env: env({ SUPPORTED_EXTENSIONS: 'jpg,txt' }) });
    expect(second.code).toBe(0);
    expect(second.logs.map((line) => line.msg)).toContain('1 failed file(s) are no longer there: no longer counted as failed');
    const status = JSON.parse((await runCli(['status', '--json'], { env: env() })).stdout) as { counts: Record<string, number>; failed: unknown[] };
    expect(status.failed).toEqual([]);
    expect(status.counts).toEqual({ gone: 1 });
  });

  it('keeps what move mode archived inside the watch folder when the mode becomes delete or keep', async () => {
    await startServer();
    archiveDir = join(watchDir, 'Archived');
    const files = await writeMedia(watchDir, ['IMG_0001.jpg', 'trip/IMG_0002.jpg', 'trip/IMG_0002.jpg.xmp']);
    expect((await runCli(['once'], { env: env() })).code).toBe(0);
    const archived = (await readdir(archiveDir, { recursive: true })).sort();
    expect(archived).toEqual(['IMG_0001.jpg', 'trip', 'trip/IMG_0002.jpg', 'trip/IMG_0002.jpg.xmp']);
    for (const mode of ['delete', 'keep']) {
      const again = await runCli(['once'], { env: env({ AFTER_UPLOAD: mode }) });
      expect(again.code, mode).toBe(0);
      expect(again.logs.filter((line) => line.msg.includes('Archived/')), `${mode}: nothing of the archive taken up`).toEqual([]);
      expect((await readdir(archiveDir, { recursive: true })).sort(), mode).toEqual(archived);
    }
    for (const [name, bytes] of files) expect((await readIfExists(join(archiveDir, name)))?.equals(bytes), name).toBe(true);
    expect(server.assets).toHaveLength(2);
  });

  it('stops (exit 1) when the archive is on a disk that /etc/fstab mounts and nothing is mounted there, touching nothing', async () => {
    await startServer();
    const disk = await usbDisk();
    await writeMedia(watchDir, ['IMG_0001.jpg']);
    const result = await runCli(['once'], { env: env(disk.env) });
    expect(result.code).toBe(1);
    expect(result.logs.some((line) => line.msg.endsWith(`which /etc/fstab mounts, but nothing is mounted there: mount it (mount ${disk.usb}) and run again`))).toBe(true);
    expect(result.stderr + result.stdout).not.toContain('    at ');
    expect(existsSync(join(disk.usb, 'archive'))).toBe(false);
    expect(existsSync(join(watchDir, 'IMG_0001.jpg'))).toBe(true);
    expect(server.assets).toHaveLength(0);
  });

  it('stops (exit 1) when a watch folder is on a disk that /etc/fstab mounts and nothing is mounted there', async () => {
    await startServer();
    const disk = await usbDisk();
    const result = await runCli(['once'], { env: env({ ...disk.env, WATCH_DIRECTORIES: `${watchDir},${join(disk.usb, 'photos')}`, ARCHIVE_DIRECTORY: archiveDir }) });
    expect(result.code).toBe(1);
    expect(result.logs.map((line) => line.msg)).toContain(
      `WATCH_DIRECTORIES ${join(disk.usb, 'photos')} is on ${disk.usb}, which /etc/fstab mounts, but nothing is mounted there: mount it (mount ${disk.usb}) and run again`,
    );
    expect(result.stderr + result.stdout).not.toContain('    at ');
  });

  it('stops (exit 1) when nothing is mounted where the archive\'s disk was at an earlier start', async () => {
    await startServer();
    const disk = await usbDisk({ inFstab: false, mounted: true });
    archiveDir = join(disk.usb, 'archive');
    const first = await writeMedia(watchDir, ['IMG_0001.jpg']);
    expect((await runCli(['once'], { env: env(disk.env) })).code).toBe(0);
    await expectUploadedAndArchived(first);

    // The disk taken away, and the archive with it.
    await rm(archiveDir, { recursive: true });
    await disk.unmount();
    await writeMedia(watchDir, ['IMG_0002.jpg']);
    const away = await runCli(['once'], { env: env(disk.env) });
    expect(away.code).toBe(1);
    expect(away.logs.map((line) => line.msg)).toContain(
      `ARCHIVE_DIRECTORY ${archiveDir} was on the disk mounted at ${disk.usb} when the uploader last started, and nothing is mounted there now: ` +
        `mount it and run again; to go on without that disk from now on, remove ${join(temp.path, 'state', 'disks.json')}`,
    );
    expect(existsSync(archiveDir), 'no archive made on the disk beneath').toBe(false);
    expect(existsSync(join(watchDir, 'IMG_0002.jpg'))).toBe(true);
    expect(server.assets).toHaveLength(1);

    // watch waits for it, and goes on when the disk is back with the archive on it.
    const run = watch(disk.env);
    await run.waitForLog((line) => line.level === 40 && line.msg.startsWith(`ARCHIVE_DIRECTORY ${archiveDir} was on the disk mounted at ${disk.usb}`));
    await mkdir(archiveDir);
    await disk.mount();
    await waitFor(() => !existsSync(join(watchDir, 'IMG_0002.jpg')), { message: 'IMG_0002.jpg archived' });
    expect(server.assets).toHaveLength(2);
    expect(existsSync(join(archiveDir, 'IMG_0002.jpg'))).toBe(true);
    expect(await stopGracefully(run)).toBe(0);
  });

  it('stops (exit 1) when nothing is mounted where a watch folder\'s disk was at an earlier start, and watch waits for it', async () => {
    await startServer();
    const disk = await usbDisk({ inFstab: false, mounted: true });
    watchDir = join(disk.usb, 'photos');
    const first = await writeMedia(watchDir, ['IMG_0001.jpg']);
    const settings = { ...disk.env, WATCH_DIRECTORIES: watchDir, ARCHIVE_DIRECTORY: archiveDir };
    expect((await runCli(['once'], { env: env(settings) })).code).toBe(0);
    await expectUploadedAndArchived(first);

    // The stick taken away, and its folders with it.
    await rm(watchDir, { recursive: true });
    await disk.unmount();
    const away = await runCli(['once'], { env: env(settings) });
    expect(away.code, away.stdout + away.stderr).toBe(1);
    expect(away.logs.map((line) => line.msg)).toContain(
      `WATCH_DIRECTORIES ${watchDir} was on the disk mounted at ${disk.usb} when the uploader last started, and nothing is mounted there now: ` +
        `mount it and run again; to go on without that disk from now on, remove ${join(temp.path, 'state', 'disks.json')}`,
    );

    const run = watch(settings);
    await run.waitForLog((line) => line.level === 40 && line.msg.endsWith('its files are uploaded once it is mounted'));
    const second = await writeMedia(watchDir, ['IMG_0002.jpg']);
    await disk.mount();
    await waitFor(() => !existsSync(join(watchDir, 'IMG_0002.jpg')), { message: 'IMG_0002.jpg archived' });
    await expectUploadedAndArchived(second);
    expect(run.logs().filter((line) => line.level >= 50)).toEqual([]);
    expect(await stopGracefully(run)).toBe(0);
  });

  it('uploads a file exactly once when the connection drops mid-upload', async () => {
    await startServer();
    server.dropNextUpload({ afterBytes: 100 * 1024 });
    const files = await writeMedia(watchDir, ['dropped.mp4'], 512 * 1024);
    const result = await runCli(['once'], { env: env() });
    expect(result.code, result.stdout).toBe(0);
    await expectUploadedAndArchived(files);
  });

  it("finds on the server a large video whose upload's answer a proxy lost, without sending it again", async () => {
    await startServer();
    // Slower than the hash, so that the check finds nothing on the server yet.
    server.delayNext(1, 500, { path: '/api/assets', exact: true });
    server.loseNextAnswers(1, { path: '/api/assets', exact: true });
    const files = await writeMedia(watchDir, ['VID_0001.mp4'], 3 * 1024 * 1024);
    const result = await runCli(['once'], { env: env() });
    expect(result.code, result.stdout).toBe(0);
    await expectUploadedAndArchived(files);
    expect(server.requests.filter((request) => request.path === '/api/assets')).toHaveLength(1);
  });

  it('archives files the server already has without uploading them, warning of one in its trash', async () => {
    await startServer();
    const files = await writeMedia(watchDir, ['known-1.jpg', 'sub/known-2.jpg']);
    for (const [name, bytes] of files) server.seedAsset({ checksum: sha1(bytes), filename: name, trashed: name === 'sub/known-2.jpg' });
    const result = await runCli(['once'], { env: env() });
    expect(result.code, result.stdout).toBe(0);
    await expectUploadedAndArchived(files, { uploaded: false });
    expect(server.requests.filter((r) => r.method === 'POST' && r.path === '/api/assets')).toHaveLength(0);
    expect(result.logs.find((line) => line.msg.startsWith('summary:'))).toMatchObject({ duplicates: 2, uploaded: 0 });
    // The original is archived all the same, but Immich will empty its trash: the user is told.
    const warnings = result.logs.filter((line) => line.level === 40);
    expect(warnings.map((line) => line.file)).toEqual(['sub/known-2.jpg']);
    expect(warnings[0]?.msg).toContain('only in its trash');
  });

  it('REMOVE_EMPTY_FOLDERS: removes the sub-folders it emptied, and only those', async () => {
    await startServer();
    const files = await writeMedia(watchDir, ['card/DCIM/100CANON/IMG_1.JPG', 'card/DCIM/100CANON/IMG_2.JPG', 'card/DCIM/101CANON/IMG_3.JPG', 'phone/IMG_4.jpg']);
    // What a Mac's Finder leaves behind does not keep a folder.
    await writeMedia(watchDir, ['card/DCIM/101CANON/notes.txt', 'card/DCIM/100CANON/.DS_Store', 'card/DCIM/100CANON/._IMG_1.JPG']);
    await mkdir(join(watchDir, 'empty-before'));
    const result = await runCli(['once'], { env: env({ REMOVE_EMPTY_FOLDERS: 'true', FILE_STABILITY_WAIT_SECONDS: '0.2' }) });
    expect(result.code, result.stdout + result.stderr).toBe(0);
    await expectUploadedAndArchived(files);
    // 101CANON keeps a file the uploader does not take, and with it its parents; a folder it took
    // nothing from stays too.
    expect((await readdir(watchDir)).sort()).toEqual(['card', 'empty-before']);
    expect(await readdir(join(watchDir, 'card/DCIM'))).toEqual(['101CANON']);
    const removed = result.logs.filter((line) => line.msg.startsWith('removed the emptied folder')).map((line) => line.folder);
    expect(removed.sort()).toEqual([join('card', 'DCIM', '100CANON'), 'phone']);
  });

  it('uploads large videos while hashing them, and archives one the server has without adding it again', async () => {
    await startServer();
    const files = await writeMedia(watchDir, ['clips/new.mp4', 'clips/known.mp4'], 3 * 1024 * 1024);
    const known = files.get('clips/known.mp4') ?? Buffer.alloc(0);
    server.seedAsset({ checksum: sha1(known), filename: 'known.mp4' });
    const result = await runCli(['once'], { env: env() });
    expect(result.code, result.stdout).toBe(0);
    await expectUploadedAndArchived(new Map([...files].filter(([name]) => name !== 'clips/known.mp4')));
    await expectUploadedAndArchived(new Map([['clips/known.mp4', known]]), { uploaded: false });
    expect(server.assets).toHaveLength(2);
    expect(server.uploadCount).toBe(1);
    expect(result.logs.find((line) => line.msg.startsWith('summary:'))).toMatchObject({ uploaded: 1, duplicates: 1 });
  });

  it('gets every file to the server exactly once while the server fails 30% of requests', async () => {
    await startServer();
    server.setFailureRate(0.3, 503, 42);
    const files = await writeMedia(
      watchDir,
      Array.from({ length: 30 }, (_, i) => `flaky/${i}.jpg`),
    );
    const result = await runCli(['once'], { env: env(), timeoutMs: 120_000 });
    expect(result.code, result.stdout.slice(-3000)).toBe(0);
    await expectUploadedAndArchived(files);
    expect(server.assets).toHaveLength(files.size);
  });

  it('never overwrites in the archive: different content gets a new name, same content counts as archived', async () => {
    await startServer();
    const files = await writeMedia(watchDir, ['a.jpg', 'b.jpg']);
    const older = randomBytes(1000);
    await mkdir(archiveDir, { recursive: true });
    await writeFile(join(archiveDir, 'a.jpg'), older);
    await writeFile(join(archiveDir, 'b.jpg'), files.get('b.jpg') ?? Buffer.alloc(0));
    const result = await runCli(['once'], { env: env() });
    expect(result.code, result.stdout).toBe(0);
    expect(sha1((await readIfExists(join(archiveDir, 'a.jpg'))) ?? Buffer.alloc(0))).toBe(sha1(older));
    expect(sha1((await readIfExists(join(archiveDir, 'a (1).jpg'))) ?? Buffer.alloc(0))).toBe(sha1(files.get('a.jpg') ?? Buffer.alloc(1)));
    expect(sha1((await readIfExists(join(archiveDir, 'b.jpg'))) ?? Buffer.alloc(0))).toBe(sha1(files.get('b.jpg') ?? Buffer.alloc(1)));
    expect(await readdir(watchDir)).toEqual([]);
    expect((await readdir(archiveDir)).sort()).toEqual(['a (1).jpg', 'a.jpg', 'b.jpg']);
  });

  it('leaves an empty file in place (skipped, not failed) and a file the server refuses in place (exit 1)', async () => {
    await startServer();
    const good = await writeMedia(watchDir, ['good.jpg']);
    await writeFile(join(watchDir, 'empty.jpg'), '');
    await writeFile(join(watchDir, 'notes.txt'), 'not a photo');
    const result = await runCli(['once'], { env: env({ SUPPORTED_EXTENSIONS: 'jpg,txt' }) });
    expect(result.code, result.stdout).toBe(1);
    await expectUploadedAndArchived(good);
    expect(existsSync(join(watchDir, 'empty.jpg'))).toBe(true);
    expect(existsSync(join(watchDir, 'notes.txt'))).toBe(true);
    const failure = result.logs.find((line) => line.msg.startsWith('failed notes.txt'));
    expect(failure?.msg).toContain('Unsupported file type');
    expect(result.logs.find((line) => line.msg.startsWith('summary:'))).toMatchObject({ uploaded: 1, skipped: 1, failed: 1 });
  });

  it('tells of a copy a stop left while a file was put back into the watch folder, and neither uploads nor removes it', async () => {
    await startServer();
    const good = await writeMedia(watchDir, ['card/good.jpg']);
    const left = join(watchDir, 'card', '.IMG_7.JPG.iau-tmp-0123456789ab');
    await writeFile(left, randomBytes(5000));
    const result = await runCli(['once'], { env: env() });
    expect(result.code, result.stdout).toBe(0);
    await expectUploadedAndArchived(good);
    expect(server.assets).toHaveLength(1);
    expect(existsSync(left)).toBe(true);
    const warnings = result.logs.filter((line) => line.level === 40);
    expect(warnings.map((line) => line.msg)).toEqual([expect.stringMatching(/^card\/\.IMG_7\.JPG\.iau-tmp-0123456789ab is a copy of IMG_7\.JPG left by a stop/)]);
  });

  it('stops with exit 3 when the key is revoked mid-run, archiving nothing unconfirmed', async () => {
    await startServer();
    server.failNext(1, 401, { path: '/api/assets', exact: true });
    await writeMedia(watchDir, ['revoked.jpg']);
    const result = await runCli(['once'], { env: env() });
    expect(result.code).toBe(3);
    expect(existsSync(join(watchDir, 'revoked.jpg'))).toBe(true);
    expect(existsSync(join(archiveDir, 'revoked.jpg'))).toBe(false);
    expectNoSecret(result.stdout, result.stderr);
  });

  // Root reads any folder: the uploader then runs as nobody, who must be able to start it.
  const asRoot = process.getuid?.() === 0;
  it.skipIf(asRoot && !cliRunsAs(NOBODY))('once: exits 1 when a folder could not be read, whose files it did not see, and says so without a stack', async () => {
    await startServer();
    const good = await writeMedia(watchDir, ['good.jpg', 'locked/hidden.jpg']);
    good.delete('locked/hidden.jpg');
    const locked = join(watchDir, 'locked');
    await chmod(locked, 0o000);
    if (asRoot) for (const folder of [temp.path, watchDir]) await chmod(folder, 0o777);
    try {
      const result = await runCli(['once'], { env: env({ LOG_LEVEL: 'info' }), ...(asRoot ? { user: NOBODY } : {}) });
      expect(result.code, result.stdout).toBe(1);
      await expectUploadedAndArchived(good);
      const warning = result.logs.find((line) => line.level === 40);
      expect(warning?.msg).toBe(`Cannot read folder ${locked} (permission denied); files in it are not detected until it becomes readable (fix: let this user read it)`);
      expect(JSON.stringify(warning)).not.toContain('stack');
      expect(result.logs.find((line) => line.msg.startsWith('summary:'))?.msg).toMatch(/, 1 folder\(s\) could not be read$/);
    } finally {
      await chmod(locked, 0o755);
    }
  });

  it.skipIf(asRoot && !cliRunsAs(NOBODY))('once: fails a file it may not read with the fix, leaving it in place', async () => {
    await startServer();
    const files = await writeMedia(watchDir, ['good.jpg', 'locked.jpg']);
    await chmod(join(watchDir, 'locked.jpg'), 0o000);
    if (asRoot) for (const folder of [temp.path, watchDir]) await chmod(folder, 0o777);
    const result = await runCli(['once'], { env: env(), ...(asRoot ? { user: NOBODY } : {}) });
    expect(result.code, result.stdout).toBe(1);
    expect(result.logs.filter((line) => line.level >= 50).map((line) => line.msg)).toEqual([
      "failed locked.jpg: this user may not read it (permission denied); fix: let the uploader's user read it",
    ]);
    await expectUploadedAndArchived(new Map([['good.jpg', files.get('good.jpg') ?? Buffer.alloc(0)]]));
    expect(existsSync(join(watchDir, 'locked.jpg'))).toBe(true);
  });

  it.skipIf(asRoot && !cliRunsAs(NOBODY))('stops with one line (exit 1) when the archive folder exists but cannot be written, before any upload', async () => {
    await startServer();
    await writeMedia(watchDir, ['x.jpg']);
    await mkdir(archiveDir, { mode: 0o555 });
    await chmod(archiveDir, 0o555);
    if (asRoot) for (const folder of [temp.path, watchDir]) await chmod(folder, 0o777);
    const result = await runCli(['once'], { env: env(), ...(asRoot ? { user: NOBODY } : {}) });
    expect(result.code, result.stdout).toBe(1);
    expect(result.logs.at(-1)?.msg).toMatch(/^Cannot use ARCHIVE_DIRECTORY .*archive: EACCES.*Fix: make it a folder this user can write/);
    expect(server.assets).toHaveLength(0);
    expect(existsSync(join(watchDir, 'x.jpg'))).toBe(true);
  });

  it('stops with one line (exit 1) when the archive folder or the state folder cannot be made, touching no file', async () => {
    await startServer();
    await writeMedia(watchDir, ['x.jpg']);
    // Where recursive mkdir would spin for ever, deaf to signals.
    const archive = await runCli(['once'], { env: env({ ARCHIVE_DIRECTORY: '/proc/iau-no-such/archive' }), timeoutMs: 20_000 });
    expect(archive.code, archive.stdout).toBe(1);
    expect(archive.stdout).toMatch(/Cannot use ARCHIVE_DIRECTORY \/proc\/iau-no-such\/archive: ENOENT.*Fix: make it a folder this user can write/);
    const state = await runCli(['once'], { env: env({ STATE_DIRECTORY: '/proc/iau-no-such/state' }), timeoutMs: 20_000 });
    expect(state.code, state.stdout).toBe(1);
    expect(state.stdout + state.stderr).toMatch(/Cannot use STATE_DIRECTORY \/proc\/iau-no-such\/state: ENOENT/);
    for (const run of [archive, state]) expect(run.stdout + run.stderr).not.toMatch(/stack|\n\s+at /);
    expect(server.assets).toHaveLength(0);
    expect(existsSync(join(watchDir, 'x.jpg'))).toBe(true);
  });

  it('exits 3 when the server rejects the key, and never prints it', async () => {
    await startServer();
    await writeMedia(watchDir, ['x.jpg']);
    const result = await runCli(['once'], { env: env({ IMMICH_API_KEY: `${KEY}-wrong` }) });
    expect(result.code).toBe(3);
    expect(result.stdout + result.stderr).toMatch(/rejected the API key/);
    expect(existsSync(join(watchDir, 'x.jpg'))).toBe(true);
    expectNoSecret(result.stdout, result.stderr);
  });
});

describe('check', () => {
  it('reports each check as ok and exits 0 with a least-privilege key (asset.upload only)', async () => {
    await startServer(3, ['asset.upload']);
    const result = await runCli(['check'], { env: env() });
    expect(result.code, result.stdout).toBe(0);
    expect(result.stdout).toMatch(/ok\s+server version: Immich 3\./);
    expect(result.stdout).toMatch(/ok\s+API key accepted: "e2e key"/);
    expect(result.stdout).toMatch(/ok\s+permission asset.upload/);
    expect(result.stdout).toMatch(/ok\s+archive folder writable/);
    expect(result.stdout).toMatch(/ok\s+state folder writable/);
    expect(result.stdout).toMatch(/ok\s+journal readable: none yet: the first run makes it/);
    expectNoSecret(result.stdout, result.stderr);
    // The archive is looked at in move mode only.
    const keep = await runCli(['check'], { env: env({ AFTER_UPLOAD: 'keep' }) });
    expect(keep.code, keep.stdout).toBe(0);
    expect(keep.stdout).not.toContain('archive folder');
  });

  it('fails (exit 1), as once does, for an Immich older than 2.x', async () => {
    server = await startFakeImmich({ major: 2, keys: { [KEY]: { name: 'e2e key', permissions: ['all'] } }, reportedVersion: { major: 1, minor: 118, patch: 2 } });
    await writeMedia(watchDir, ['x.jpg']);
    const result = await runCli(['check'], { env: env() });
    expect(result.code, result.stdout).toBe(1);
    expect(result.stdout).toMatch(/FAILED\s+server version: Immich 1\.118\.2 \(too old: 2\.x or 3\.x needed; fix: upgrade Immich\)/);
    const run = await runCli(['once'], { env: env() });
    expect(run.code, run.stdout).toBe(1);
    expect(run.stdout).toMatch(/Immich 1\.118\.2 is too old for this uploader, which needs Immich 2\.x or 3\.x; fix: upgrade Immich/);
    expect(run.stdout).not.toMatch(/stack/);
    expect(server.assets).toHaveLength(0);
    expect(existsSync(join(watchDir, 'x.jpg'))).toBe(true);
  });

  it.skipIf(!canMount())('fails (exit 1) when the state folder cannot be written, which would stop the uploader at start', async () => {
    await startServer();
    const state = join(temp.path, 'state');
    await mkdir(state);
    bindMount(state, state);
    try {
      remountReadOnly(state);
      const result = await runCli(['check'], { env: env() });
      expect(result.code, result.stdout).toBe(1);
      expect(result.stdout).toContain(`state folder writable: ${state}: on a read-only file system; fix: mount it read-write (in Docker, drop \`:ro\`)`);
    } finally {
      unmount(state);
    }
  });

  it('says of a watch folder on a network share that WATCH_POLLING is needed', async () => {
    await startServer();
    const table = join(temp.path, 'mountinfo');
    await writeFile(table, `27 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n60 27 0:50 / ${watchDir} rw,relatime - cifs //nas/photos rw\n`);
    const result = await runCli(['check'], { env: env({ IMMICH_AUTO_UPLOADER_MOUNT_TABLE: table }) });
    expect(result.code, result.stdout).toBe(0);
    expect(result.stdout).toContain(`watch folder readable: ${watchDir}, on a network share (cifs): files put there from other machines`);
    expect(result.stdout).toContain('Set WATCH_POLLING=true to look for them every 10 s instead');
    const polling = await runCli(['check'], { env: env({ IMMICH_AUTO_UPLOADER_MOUNT_TABLE: table, WATCH_POLLING: 'true' }) });
    expect(polling.stdout).toContain(`watch folder readable: ${watchDir}\n`);
  });

  it('fails (exit 1) when the archive is on a disk that /etc/fstab mounts and nothing is mounted there', async () => {
    await startServer();
    const disk = await usbDisk();
    const result = await runCli(['check'], { env: env(disk.env) });
    expect(result.code).toBe(1);
    expect(result.stdout).toContain(`FAILED  archive folder writable: ARCHIVE_DIRECTORY ${join(disk.usb, 'archive')} is on ${disk.usb}, which /etc/fstab mounts`);

    await disk.mount();
    const mounted = await runCli(['check'], { env: env(disk.env) });
    expect(mounted.code, mounted.stdout).toBe(0);
  });

  it('fails (exit 1) when a watch folder is on a disk that /etc/fstab mounts and nothing is mounted there', async () => {
    await startServer();
    const disk = await usbDisk();
    const photos = join(disk.usb, 'photos');
    const result = await runCli(['check'], { env: env({ ...disk.env, WATCH_DIRECTORIES: photos, ARCHIVE_DIRECTORY: archiveDir }) });
    expect(result.code, result.stdout + result.stderr).toBe(1);
    expect(result.stdout).toContain(`FAILED  watch folder readable: WATCH_DIRECTORIES ${photos} is on ${disk.usb}, which /etc/fstab mounts`);
    // Not on such a disk, a missing watch folder stays a configuration error.
    const elsewhere = await runCli(['check'], { env: env({ ...disk.env, WATCH_DIRECTORIES: join(temp.path, 'nowhere'), ARCHIVE_DIRECTORY: archiveDir }) });
    expect(elsewhere.code).toBe(2);
  });

  it('exits 3, as once does, for a key without asset.upload, and for a rejected key', async () => {
    await startServer(3, ['album.read']);
    await writeMedia(watchDir, ['x.jpg']);
    const weak = await runCli(['check'], { env: env() });
    expect(weak.code).toBe(3);
    expect(weak.stdout).toMatch(/FAILED\s+permission asset.upload: missing/);
    const run = await runCli(['once'], { env: env() });
    expect(run.code, run.stdout).toBe(3);
    expect(run.stdout).toMatch(/lacks the permission asset.upload/);
    expect(existsSync(join(watchDir, 'x.jpg'))).toBe(true);
    const wrong = await runCli(['check'], { env: env({ IMMICH_API_KEY: 'not-the-key' }) });
    expect(wrong.code).toBe(3);
    expectNoSecret(weak.stdout, weak.stderr, wrong.stdout, wrong.stderr);
  });

  it('exits 3 when the key loses asset.upload while it runs, leaving the file in place', async () => {
    const permissions = ['asset.upload'];
    await startServer(3, permissions);
    const run = watch();
    await run.waitForLog((line) => line.msg.startsWith('watching'));
    permissions.splice(0);
    await writeMedia(watchDir, ['x.jpg']);
    const { code } = await run.exited;
    expect(code).toBe(3);
    expect(run.logs().at(-1)?.msg).toMatch(
      /^the API key may no longer upload \(POST \/api\/assets\/bulk-upload-check answered 403: Missing required permission: asset.upload\); fix: .* give the key the permission asset.upload/,
    );
    expect(existsSync(join(watchDir, 'x.jpg'))).toBe(true);
    expectNoSecret(run.stdout(), run.stderr());
  });
});

describe('usage errors', () => {
  it('exits 2 with one line per configuration problem and no stack trace', async () => {
    const result = await runCli(['once'], {
      env: { IMMICH_API_URL: 'ftp://nope', IMMICH_API_KEY: KEY, WATCH_DIRECTORIES: join(temp.path, 'missing'), UPLOAD_CONCURRENCY: 'many' },
    });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/IMMICH_API_URL/);
    expect(result.stderr).toMatch(/WATCH_DIRECTORIES/);
    expect(result.stderr).toMatch(/UPLOAD_CONCURRENCY/);
    expect(result.stderr).not.toMatch(/\n\s+at /);
    expectNoSecret(result.stdout, result.stderr);

    // A mistyped variable left the default in place, and the default is what fails: both are said.
    const typo = await runCli(['check'], { env: { IMMICH_API_URL: 'http://127.0.0.1:9', IMMICH_API_KEY: KEY, HOME: temp.path, WATCH_DIRECTORY: watchDir } });
    expect(typo.code).toBe(2);
    expect(typo.stderr.split('\n').filter((line) => line !== '')).toEqual([
      expect.stringMatching(/^configuration error: WATCH_DIRECTORIES: expected existing folders, got "~\/Downloads"/),
      expect.stringMatching(/^configuration error: WATCH_DIRECTORIES: expected existing folders, got "~\/Pictures\/Camera"/),
      'note: the environment sets WATCH_DIRECTORY, which is not an option, and is ignored: did you mean WATCH_DIRECTORIES?',
    ]);
  });

  it('exits 2 for an unknown command, flag or value, and says which', async () => {
    const unknown = await runCli(['upload-everything']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toBe("error: unknown command 'upload-everything'; the commands are watch, once, check, status, history, retry, health\n");
    const typo = await runCli(['statsu']);
    expect(typo.code).toBe(2);
    expect(typo.stderr).toContain("unknown command 'statsu' (did you mean 'status'?)");
    expect((await runCli(['once', '--no-such-flag'])).code).toBe(2);
    for (const value of ['abc', '-1', '2.7']) {
      const recent = await runCli(['status', '--recent', value, '--state-directory', join(temp.path, 'state')]);
      expect(recent.code, value).toBe(2);
      expect(recent.stderr).toContain('expected a whole number, 0 or more');
    }
    const early = await runCli(['--log-level', 'debug', 'check']);
    expect([early.code, early.stderr]).toEqual([2, 'error: options go after the command: immich-auto-uploader check [options]\n']);
  });

  it('never repeats a key given where it does not belong', async () => {
    for (const args of [['status', `--api-key=${KEY}`], ['check', `--API-KEY=${KEY}`], [KEY]]) {
      const result = await runCli(args);
      expect(result.code, args.join(' ')).toBe(2);
      expect(result.stderr, args.join(' ')).toMatch(/^error: unknown /);
      expectNoSecret(result.stdout, result.stderr);
    }
  });
});
