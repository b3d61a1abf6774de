import { createHash } from 'node:crypto';
import { appendFile, lstat, mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FsWorker } from '../../src/support/fs-worker.js';
import { makeTempDir } from '../helpers/temp-dir.js';

let temp: Awaited<ReturnType<typeof makeTempDir>>;
let worker: FsWorker;

beforeEach(async () => {
  temp = await makeTempDir();
  worker = new FsWorker();
});

afterEach(async () => {
  await worker.close();
  await temp.remove();
});

const sha1 = (bytes: Buffer | string): string => createHash('sha1').update(bytes).digest('hex');

describe('FsWorker', () => {
  it('answers lstat like fs does', async () => {
    const path = join(temp.path, 'a.jpg');
    await writeFile(path, 'twelve bytes');
    const expected = await lstat(path);
    expect(await worker.lstat(path)).toEqual({
      size: 12,
      mtimeMs: expected.mtimeMs,
      ino: expected.ino,
      dev: expected.dev,
      atimeMs: expected.atimeMs,
      birthtimeMs: expected.birthtimeMs,
      isFile: true,
    });
    expect((await worker.lstat(temp.path)).isFile).toBe(false);
  });

  it('fails with the errno codes of fs (ENOENT, EEXIST)', async () => {
    const path = join(temp.path, 'a.jpg');
    await expect(worker.lstat(path)).rejects.toMatchObject({ code: 'ENOENT', syscall: 'lstat', path });
    await writeFile(path, 'x');
    await writeFile(join(temp.path, 'b.jpg'), 'y');
    await expect(worker.link(path, join(temp.path, 'b.jpg'))).rejects.toMatchObject({ code: 'EEXIST' });
    await expect(worker.unlink(join(temp.path, 'missing'))).rejects.toBeInstanceOf(Error);
  });

  it('links, renames and unlinks', async () => {
    const path = join(temp.path, 'a.jpg');
    await writeFile(path, 'content');
    await worker.link(path, join(temp.path, 'b.jpg'));
    await worker.unlink(path);
    await worker.rename(join(temp.path, 'b.jpg'), join(temp.path, 'c.jpg'));
    expect(await readFile(join(temp.path, 'c.jpg'), 'utf8')).toBe('content');
    await expect(lstat(path)).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(lstat(join(temp.path, 'b.jpg'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('reads a file whole with its SHA-1, and one byte more when it grew', async () => {
    const path = join(temp.path, 'a.jpg');
    const bytes = Buffer.from('the settled bytes');
    await writeFile(path, bytes);
    const whole = await worker.readWhole(path, bytes.length);
    expect(whole.bytes.equals(bytes)).toBe(true);
    expect(whole.checksum).toBe(sha1(bytes));

    await appendFile(path, '+more');
    const grown = await worker.readWhole(path, bytes.length);
    expect(grown.bytes.length).toBe(bytes.length + 1);
    expect(grown.checksum).toBe(sha1(Buffer.concat([bytes, Buffer.from('+')])));
  });

  it('reads into recycled memory, and only into memory it gave out', async () => {
    const path = join(temp.path, 'a.jpg');
    await writeFile(path, 'first content');
    const first = await worker.readWhole(path, 13);
    const stranger = Buffer.alloc(64 * 1024);
    worker.recycle(stranger);
    worker.recycle(first.bytes);
    worker.recycle(first.bytes); // a second time changes nothing

    await writeFile(path, 'second content');
    const second = await worker.readWhole(path, 14);
    expect(second.bytes.toString()).toBe('second content');
    // The first answer's memory went to the thread for the second read: its views are empty now.
    expect(first.bytes.length).toBe(0);
    expect(stranger.length).toBe(64 * 1024);
    const third = await worker.readWhole(path, 14);
    // Nothing was recycled since: fresh memory, and the second answer is untouched.
    expect(third.bytes.toString()).toBe('second content');
    expect(second.bytes.toString()).toBe('second content');
  });

  it('reads the first of several names that is a regular file, within the size asked', async () => {
    const [missing, link, folder, file, next] = ['a.jpg.xmp', 'a.jpg.XMP', 'a.xmp', 'a.XMP', 'b.xmp'].map((name) => join(temp.path, name)) as [
      string,
      string,
      string,
      string,
      string,
    ];
    await writeFile(file, '<xmp>rating 5</xmp>');
    await writeFile(next, 'not reached');
    await symlink(file, link);
    await mkdir(folder);
    const found = await worker.readFirst([missing, link, folder, file, next], 1024);
    const stats = await lstat(file);
    expect(found).toMatchObject({ path: file, size: stats.size, mtimeMs: stats.mtimeMs });
    expect(Buffer.from(found?.bytes ?? []).toString()).toBe('<xmp>rating 5</xmp>');
    // Too large to read: its version, without its bytes.
    expect(await worker.readFirst([file], 4)).toEqual({ path: file, size: stats.size, mtimeMs: stats.mtimeMs, bytes: null });
    expect(await worker.readFirst([missing, link], 1024)).toBeNull();
  });

  it('serves many requests at once, each with its own answer', async () => {
    const paths = await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const path = join(temp.path, `${i}.jpg`);
        await writeFile(path, `file number ${i}`);
        return path;
      }),
    );
    const answers = await Promise.all(paths.map((path) => worker.readWhole(path, 100)));
    answers.forEach((answer, i) => expect(answer.bytes.toString()).toBe(`file number ${i}`));
  });

  it('stops waiting for an aborted request, and fails requests still waiting when closed', async () => {
    const path = join(temp.path, 'a.jpg');
    await writeFile(path, 'x');
    const stop = new AbortController();
    stop.abort(new Error('stopping'));
    await expect(worker.readWhole(path, 1, stop.signal)).rejects.toThrow('stopping');
    const pending = worker.lstat(path);
    await worker.close();
    await expect(pending).rejects.toThrow(/file-system thread stopped/);
    // A closed worker starts a new thread for the next request.
    expect((await worker.lstat(path)).size).toBe(1);
  });

  it('keeps the requests of a new thread apart from the end of the old one', async () => {
    const path = join(temp.path, 'a.jpg');
    await writeFile(path, 'xy');
    const onOldThread = worker.lstat(path);
    const closing = worker.close();
    const onNewThread = worker.lstat(path);
    await closing;
    await expect(onOldThread).rejects.toThrow(/file-system thread stopped/);
    expect((await onNewThread).size).toBe(2);
  });
});
