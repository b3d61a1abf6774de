import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { link, mkdir, open, readdir, rename, rm, rmdir, stat, symlink, utimes, writeFile, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { pino, type Logger } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { AfterUpload, WatchRoot } from '../../src/config.js';
import { disposeOriginal } from '../../src/pipeline/after-upload.js';
import { nodeArchiveFs, simulatedCrossDeviceFs, type ArchiveFs } from '../../src/pipeline/archive.js';
import { judgeLateWrite, LateWrites, MAX_WATCHED } from '../../src/pipeline/late-writes.js';
import { makeRecorder } from '../../src/pipeline/states.js';
import { systemClock } from '../../src/support/clock.js';
import { deviceNumbers, DiskKinds } from '../../src/support/disk-kinds.js';
import { readIfExists, sha1 } from '../helpers/media.js';
import { makeTempDir } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait-for.js';

describe('judgeLateWrite', () => {
  const uploaded = { size: 100, mtimeMs: 1_000 };
  const grown = { size: 150, mtimeMs: 2_000 };

  it('follows the bytes from the upload to a change, and calls them complete once the change held for the window', () => {
    expect(judgeLateWrite(uploaded, undefined, uploaded, 0, 500)).toEqual({ kind: 'unchanged' });
    expect(judgeLateWrite(uploaded, undefined, grown, 0, 500)).toEqual({ kind: 'changing', version: grown });
    const changed = { version: grown, since: 10_000 };
    expect(judgeLateWrite(uploaded, changed, grown, 10_499, 500)).toEqual({ kind: 'settling' });
    expect(judgeLateWrite(uploaded, changed, grown, 10_500, 500)).toEqual({ kind: 'complete', version: grown });
    // Written to again while it settled: its wait starts over.
    const again = { size: 200, mtimeMs: 3_000 };
    expect(judgeLateWrite(uploaded, changed, again, 10_600, 500)).toEqual({ kind: 'changing', version: again });
    // Back to its uploaded size and time is still a change from the last one seen.
    expect(judgeLateWrite(uploaded, changed, uploaded, 10_600, 500)).toEqual({ kind: 'changing', version: uploaded });
  });

  it('lets go of bytes whose name leads nowhere any more', () => {
    expect(judgeLateWrite(uploaded, undefined, null, 0, 500)).toEqual({ kind: 'gone' });
    expect(judgeLateWrite(uploaded, { version: grown, since: 0 }, null, 10_000, 500)).toEqual({ kind: 'gone' });
  });
});

describe('LateWrites', () => {
  let temp: { path: string; remove: () => Promise<void> };
  let root: WatchRoot;
  let lines: Array<{ level: number; msg: string; assetId?: string; putBack?: string }>;
  let logger: Logger;
  let watcher: LateWrites | undefined;
  /** Writers the test opened: closed after it. */
  const writers: FileHandle[] = [];
  const record = makeRecorder(
    async () => undefined,
    () => undefined,
  );

  beforeEach(async () => {
    temp = await makeTempDir('iau-late-writes-');
    root = { path: join(temp.path, 'inbox'), archivePath: join(temp.path, 'archive') };
    await mkdir(root.path);
    lines = [];
    logger = pino({ level: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line) as (typeof lines)[number]) });
  });

  afterEach(async () => {
    await watcher?.close();
    watcher = undefined;
    for (const writer of writers.splice(0)) await writer.close().catch(() => undefined);
    await temp.remove();
  });

  function lateWrites(fs: ArchiveFs = nodeArchiveFs, watchMs?: number): LateWrites {
    watcher = new LateWrites({
      clock: systemClock,
      logger,
      waitMs: 150,
      intervalMs: 20,
      fs,
      display: (file) => file.path.slice(root.path.length + 1),
      ...(watchMs === undefined ? {} : { watchMs }),
    });
    watcher.start();
    return watcher;
  }

  /**
   * A program writing `name` that pauses after its first part: the part is taken care of
   * (`mode`) while the program still has the file open. Returns the program's handle.
   */
  async function pausedWriter(name: string, first: Buffer, mode: AfterUpload, late: LateWrites, fs: ArchiveFs = nodeArchiveFs, sentSidecar?: string): Promise<FileHandle> {
    const path = join(root.path, name);
    await mkdir(dirname(path), { recursive: true });
    const writer = await open(path, 'w');
    writers.push(writer);
    await writer.write(first);
    const info = await stat(path);
    const sidecar = sentSidecar === undefined ? {} : { sidecar: { path: sentSidecar, ...(({ size, mtimeMs }) => ({ size, mtimeMs }))(await stat(sentSidecar)) } };
    const file = { path, root, size: info.size, mtimeMs: info.mtimeMs, checksum: sha1(first), assetId: 'asset-1', ...sidecar };
    await disposeOriginal(file, mode, record, fs, late);
    return writer;
  }

  const warnings = (): typeof lines => lines.filter((line) => line.level === 40);
  /** Waits for the warning that ends the `n`th put-back, the last thing it does. */
  const putBack = (n = 1): Promise<unknown> => waitFor(() => warnings().length >= n, { message: `put-back ${n} over` });

  it('move by hard link: the complete file goes back from the archive into the watch folder with its sidecar, and the incomplete asset is named', async () => {
    const late = lateWrites();
    const [first, rest] = [randomBytes(3000), randomBytes(2000)];
    await writeFile(join(root.path, 'VID_1.MP4.xmp'), '<xmp/>');
    const writer = await pausedWriter('VID_1.MP4', first, 'move', late);
    expect(await readIfExists(join(root.archivePath, 'VID_1.MP4'))).toEqual(first);
    expect(await readdir(root.archivePath)).toEqual(['VID_1.MP4', 'VID_1.MP4.xmp']);
    await writer.write(rest);
    await writer.close();

    await putBack();
    expect(await readIfExists(join(root.path, 'VID_1.MP4'))).toEqual(Buffer.concat([first, rest]));
    expect(await readdir(root.archivePath)).toEqual([]);
    expect((await readdir(root.path)).sort()).toEqual(['VID_1.MP4', 'VID_1.MP4.xmp']);
    expect(warnings()).toMatchObject([{ assetId: 'asset-1', putBack: join(root.path, 'VID_1.MP4') }]);
    expect(warnings()[0]?.msg).toMatch(
      /^VID_1\.MP4 was written to again after it was uploaded and archived: its complete version was moved out of the archive, back into the watch folder with VID_1\.MP4\.xmp, to be uploaded again\. The server keeps what it got first \(asset asset-1\)/,
    );
    await waitFor(() => late.size === 0, { message: 'the watch over' });
  });

  it('delete mode: the complete file is saved from the deleted one, which the uploader held open', async () => {
    const late = lateWrites();
    const [first, rest] = [randomBytes(3000), randomBytes(70_000)];
    const writer = await pausedWriter('sub/IMG_1.JPG', first, 'delete', late);
    expect(existsSync(join(root.path, 'sub/IMG_1.JPG'))).toBe(false);
    // Its folder went with it (REMOVE_EMPTY_FOLDERS).
    await rmdir(join(root.path, 'sub'));
    await writer.write(rest);

    await putBack();
    const whole = Buffer.concat([first, rest]);
    expect(await readIfExists(join(root.path, 'sub/IMG_1.JPG'))).toEqual(whole);
    // No temporary is left beside it.
    expect(await readdir(join(root.path, 'sub'))).toEqual(['IMG_1.JPG']);
    expect(warnings()).toHaveLength(1);
    expect(warnings()[0]?.msg).toMatch(/uploaded and deleted: its complete version was saved from the deleted file, back into the watch folder/);

    // The program pauses again: what it writes goes into the file it has, not the copy put back.
    const more = randomBytes(1000);
    await writer.write(more);
    await writer.close();
    await putBack(2);
    expect(await readIfExists(join(root.path, 'sub/IMG_1 (1).JPG'))).toEqual(Buffer.concat([whole, more]));
  });

  it('delete mode: the sidecar sent with the first part, deleted with it, goes back beside the complete version', async () => {
    const late = lateWrites();
    const xmp = join(root.path, 'IMG_5.JPG.xmp');
    await writeFile(xmp, '<xmp rating="5"/>');
    const [first, rest] = [randomBytes(3000), randomBytes(2000)];
    const writer = await pausedWriter('IMG_5.JPG', first, 'delete', late, nodeArchiveFs, xmp);
    expect(await readdir(root.path)).toEqual([]);
    await writer.write(rest);
    await putBack();
    expect((await readdir(root.path)).sort()).toEqual(['IMG_5.JPG', 'IMG_5.JPG.xmp']);
    expect(await readIfExists(join(root.path, 'IMG_5.JPG'))).toEqual(Buffer.concat([first, rest]));
    expect(await readIfExists(xmp)).toEqual(Buffer.from('<xmp rating="5"/>'));
    expect(warnings()[0]?.msg).toMatch(/back into the watch folder with IMG_5\.JPG\.xmp, to be uploaded again/);
  });

  it('delete mode: a sidecar that another file of the name still needs is not deleted, and not written again', async () => {
    const late = lateWrites();
    const xmp = join(root.path, 'IMG_6.xmp');
    await writeFile(xmp, '<xmp/>');
    await writeFile(join(root.path, 'IMG_6.MOV'), 'the video of the live photo');
    const writer = await pausedWriter('IMG_6.HEIC', randomBytes(3000), 'delete', late, nodeArchiveFs, xmp);
    await writer.write(randomBytes(2000));
    await putBack();
    expect((await readdir(root.path)).sort()).toEqual(['IMG_6.HEIC', 'IMG_6.MOV', 'IMG_6.xmp']);
    expect(warnings()[0]?.msg).toMatch(/back into the watch folder, to be uploaded again/);
  });

  it('a move across disks: the archive keeps the copy of what was uploaded, the complete file goes back to the watch folder', async () => {
    const fs = simulatedCrossDeviceFs();
    const late = lateWrites(fs);
    const [first, rest] = [randomBytes(3000), randomBytes(2000)];
    const writer = await pausedWriter('VID_2.MP4', first, 'move', late, fs);
    await writer.write(rest);
    await writer.close();

    await putBack();
    expect(await readIfExists(join(root.path, 'VID_2.MP4'))).toEqual(Buffer.concat([first, rest]));
    expect(await readIfExists(join(root.archivePath, 'VID_2.MP4'))).toEqual(first);
    expect(warnings()[0]?.msg).toContain(`The archive's copy ${join(root.archivePath, 'VID_2.MP4')} holds what was uploaded.`);
  });

  it('keep mode: only a warning, since the original in place goes round by itself', async () => {
    const late = lateWrites();
    const writer = await pausedWriter('IMG_2.JPG', randomBytes(1000), 'keep', late);
    await writer.write(randomBytes(1000));
    await writer.close();
    await putBack();
    expect(warnings()[0]?.msg).toMatch(/^IMG_2\.JPG was written to again after it was uploaded: its new version is uploaded as well\./);
    expect(await readdir(root.path)).toEqual(['IMG_2.JPG']);
  });

  it('puts the complete file back under a numbered name when a new file took its name', async () => {
    const late = lateWrites();
    const writer = await pausedWriter('IMG_3.JPG', randomBytes(1000), 'move', late);
    const newcomer = randomBytes(500);
    await writeFile(join(root.path, 'IMG_3.JPG'), newcomer);
    await writer.write(randomBytes(1000));
    await writer.close();
    await waitFor(() => existsSync(join(root.path, 'IMG_3 (1).JPG')), { message: 'the complete file under a numbered name' });
    expect(await readIfExists(join(root.path, 'IMG_3.JPG'))).toEqual(newcomer);
    expect((await stat(join(root.path, 'IMG_3 (1).JPG'))).size).toBe(2000);
  });

  it('makes nothing where the watch folder itself is gone (a disk taken away), and says where the file is', async () => {
    const late = lateWrites();
    const writer = await pausedWriter('IMG_6.JPG', randomBytes(1000), 'move', late);
    await rename(root.path, `${root.path}.away`);
    await writer.write(randomBytes(1000));
    await writer.close();
    const error = await waitFor(() => lines.find((line) => line.level === 50), { message: 'the error' });
    expect(error.msg).toBe(
      `IMG_6.JPG was written to again after it was uploaded, and its complete version could not be put back into the watch folder: ` +
        `the watch folder ${root.path} is gone (ENOENT: no such file or directory, lstat '${root.path}'). It is tried again every minute. ` +
        `It is at ${join(root.archivePath, 'IMG_6.JPG')}.`,
    );
    expect(existsSync(root.path)).toBe(false);
    expect((await stat(join(root.archivePath, 'IMG_6.JPG'))).size).toBe(2000);
  });

  it('saves what was written between the last look at a file and the removal of its name', async () => {
    const late = lateWrites();
    const path = join(root.path, 'IMG_8.JPG');
    const first = randomBytes(1000);
    await writeFile(path, first);
    const uploaded = await stat(path);
    // Written to after the delete's last look: the descriptor holds the new version.
    await writeFile(path, Buffer.concat([first, first]));
    const handle = await late.hold(path, uploaded);
    if (handle === undefined) throw new Error('the file was not held');
    await rm(path);
    late.watch({ path, root, size: uploaded.size, mtimeMs: uploaded.mtimeMs, assetId: 'asset-8', checksum: sha1(first), afterUpload: 'delete', bytes: { kind: 'held', handle } });
    await waitFor(async () => (await readIfExists(path))?.length === 2000, { message: 'the newer version saved' });
  });

  it('saves at close a change it has not seen settle yet', async () => {
    const late = lateWrites();
    const [first, rest] = [randomBytes(1000), randomBytes(1000)];
    const writer = await pausedWriter('IMG_4.JPG', first, 'delete', late);
    await writer.write(rest);
    await late.close();
    expect(await readIfExists(join(root.path, 'IMG_4.JPG'))).toEqual(Buffer.concat([first, rest]));
  });

  it('does not watch a file last written before its watch, and ends a watch when its time is up', async () => {
    const late = lateWrites(nodeArchiveFs, 600);
    const old = join(root.path, 'old.jpg');
    await writeFile(old, randomBytes(100));
    const hourAgo = new Date(Date.now() - 60 * 60_000);
    await utimes(old, hourAgo, hourAgo);
    const info = await stat(old);
    expect(await late.hold(old, info)).toBeUndefined();
    await disposeOriginal({ path: old, root, size: info.size, mtimeMs: info.mtimeMs, checksum: 'x' }, 'keep', record, nodeArchiveFs, late);
    expect(late.size).toBe(0);

    await pausedWriter('IMG_5.JPG', randomBytes(100), 'delete', late);
    expect(late.size).toBe(1);
    await waitFor(() => late.size === 0, { message: 'the watch over', timeoutMs: 5_000 });
    expect(warnings()).toEqual([]);
  });

  it('holds nothing open on removable media (a card in a reader), which would keep it from being ejected', async () => {
    // A fake sysfs in which the disk of the temporary folder is removable.
    const sysfs = join(temp.path, 'sys');
    const { major, minor } = deviceNumbers((await stat(temp.path)).dev);
    await mkdir(join(sysfs, 'devices/card'), { recursive: true });
    await writeFile(join(sysfs, 'devices/card/removable'), '1\n');
    await mkdir(join(sysfs, 'dev/block'), { recursive: true });
    await symlink('../../devices/card', join(sysfs, 'dev/block', `${major}:${minor}`));
    watcher = new LateWrites({
      ...{ clock: systemClock, logger, waitMs: 150, intervalMs: 20, fs: nodeArchiveFs },
      ...{ display: (file) => file.path, disks: new DiskKinds(sysfs) },
    });
    await pausedWriter('IMG_7.JPG', randomBytes(100), 'delete', watcher);
    expect(watcher.size).toBe(0);
  });

  it(`watches at most ${MAX_WATCHED} files, ending the oldest watch first`, async () => {
    const late = lateWrites();
    const now = Date.now();
    for (let n = 0; n <= MAX_WATCHED; n++) {
      const path = join(root.path, `${n}.jpg`);
      late.watch({ path, root, size: 1, mtimeMs: now, assetId: undefined, checksum: '', afterUpload: 'keep', bytes: { kind: 'named', path } });
    }
    expect(late.size).toBe(MAX_WATCHED);
  });

  it('knows a file written again from its start, at the same path, for one whose first bytes are an upload it watches', async () => {
    const late = lateWrites();
    const [first, rest] = [randomBytes(3000), randomBytes(2000)];
    await pausedWriter('IMG_9.JPG', first, 'move', late);
    const path = join(root.path, 'IMG_9.JPG');
    const version = async (): Promise<{ path: string; size: number; mtimeMs: number }> => ({ path, ...(({ size, mtimeMs }) => ({ size, mtimeMs }))(await stat(path)) });
    // The program opens the path again and writes the whole file.
    await writeFile(path, Buffer.concat([first, rest]));
    expect(await late.incompleteVersionOf(await version())).toBe('asset-1');
    // A new photo of the same name (a camera's counter come round): other first bytes.
    await writeFile(path, randomBytes(5000));
    expect(await late.incompleteVersionOf(await version())).toBeUndefined();
    // Not longer than what was uploaded: not a completion of it.
    await writeFile(path, first);
    expect(await late.incompleteVersionOf(await version())).toBeUndefined();
    expect(await late.incompleteVersionOf({ path: join(root.path, 'other.jpg'), size: 9000, mtimeMs: 0 })).toBeUndefined();
    // Keep mode watches the path itself, and tells of its change.
    const kept = join(root.path, 'IMG_10.JPG');
    await writeFile(kept, first);
    late.watch({ path: kept, root, size: first.length, mtimeMs: Date.now(), assetId: 'asset-10', checksum: sha1(first), afterUpload: 'keep', bytes: { kind: 'named', path: kept } });
    await writeFile(kept, Buffer.concat([first, rest]));
    expect(await late.incompleteVersionOf({ path: kept, size: first.length + rest.length, mtimeMs: Date.now() })).toBeUndefined();
  });

  describe('temporaries a stop left in a watch folder', () => {
    const temporary = (name: string): string => join(root.path, `.${name}.iau-tmp-0123456789ab`);

    it('removes one that is a second name of the file put back, and keeps and tells of any other, once', async () => {
      const late = lateWrites();
      const placed = join(root.path, 'IMG_1.JPG');
      await writeFile(placed, 'whole');
      await link(placed, temporary('IMG_1.JPG'));
      await writeFile(temporary('IMG_2.JPG'), 'only copy');
      late.leftover(temporary('IMG_1.JPG'), root);
      late.leftover(temporary('IMG_2.JPG'), root);
      // Each rescan lists it again.
      late.leftover(temporary('IMG_2.JPG'), root);
      await late.close();
      expect((await readdir(root.path)).sort()).toEqual(['.IMG_2.JPG.iau-tmp-0123456789ab', 'IMG_1.JPG']);
      expect(await readIfExists(placed)).toEqual(Buffer.from('whole'));
      expect(lines.filter((line) => line.level === 30).map((line) => line.msg)).toEqual([
        'removed .IMG_1.JPG.iau-tmp-0123456789ab, a second name of IMG_1.JPG left by a stop while it was put back into the watch folder',
      ]);
      expect(warnings().map((line) => line.msg)).toEqual([
        '.IMG_2.JPG.iau-tmp-0123456789ab is a copy of IMG_2.JPG left by a stop while IMG_2.JPG, written to after its upload, was put back into the watch folder. ' +
          'It is not uploaded, as it may be incomplete: look at it, then rename it to IMG_2.JPG to have it uploaded, or delete it',
      ]);
    });

    it('leaves alone one in a folder a complete version is being put back into', async () => {
      let blocked = false;
      let release = (): void => undefined;
      const gate = new Promise<void>((resolve) => (release = resolve));
      const gated: ArchiveFs = {
        ...nodeArchiveFs,
        mkdir: async (path, options) => {
          blocked = true;
          await gate;
          return nodeArchiveFs.mkdir(path, options);
        },
      };
      const late = lateWrites(gated);
      const writer = await pausedWriter('IMG_3.JPG', randomBytes(1000), 'delete', late, gated);
      await writer.write(randomBytes(1000));
      await waitFor(() => blocked, { message: 'the put-back to start' });
      await writeFile(temporary('IMG_3.JPG'), 'being copied');
      late.leftover(temporary('IMG_3.JPG'), root);
      release();
      await putBack();
      await late.close();
      expect(warnings()).toHaveLength(1);
      expect(warnings()[0]?.msg).toMatch(/its complete version was saved from the deleted file/);
    });
  });
});
