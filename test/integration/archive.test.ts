import { createHash } from 'node:crypto';
import { appendFile, copyFile, lstat, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { WatchRoot } from '../../src/config.js';
import {
  ArchiveError,
  archiveFile,
  isArchiveTemporary,
  keepingArchiveDirectory,
  nodeArchiveFs,
  numberedName,
  removeStaleTemporaries,
  SourceChangedError,
  SourceUnwritableError,
  type ArchiveFs,
} from '../../src/pipeline/archive.js';
import type { FileVersion } from '../../src/pipeline/types.js';
import { makeTempDir } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait-for.js';

let dir: Awaited<ReturnType<typeof makeTempDir>>;
let root: WatchRoot;

beforeEach(async () => {
  dir = await makeTempDir('iau-archive-');
  root = { path: join(dir.path, 'watch'), archivePath: join(dir.path, 'archive') };
  await mkdir(root.path);
});
afterEach(async () => {
  await dir.remove();
});

const sha1 = (bytes: Buffer | string): string => createHash('sha1').update(bytes).digest('hex');

/** Writes a file (folders included) and returns what the pipeline would know about it. */
async function put(path: string, content: string | Buffer, mtimeMs = Date.UTC(2023, 5, 1)) {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, content);
  await utimes(path, mtimeMs / 1000, mtimeMs / 1000);
  const stats = await lstat(path);
  const expected: FileVersion = { size: stats.size, mtimeMs: stats.mtimeMs };
  return { path, expected, checksum: sha1(content) };
}

async function exists(path: string): Promise<boolean> {
  return lstat(path).then(
    () => true,
    () => false,
  );
}

/** Every file under a folder, relative, sorted. */
async function tree(folder: string): Promise<string[]> {
  if (!(await exists(folder))) return [];
  const entries = await readdir(folder, { recursive: true, withFileTypes: true });
  return entries
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath, entry.name).slice(folder.length + 1))
    .sort();
}

function errno(code: string, syscall: string, path: string): NodeJS.ErrnoException {
  const error: NodeJS.ErrnoException = new Error(`${code}: injected failure, ${syscall} '${path}'`);
  error.code = code;
  error.syscall = syscall;
  return error;
}

/** The real file system with some operations replaced. */
const fsWith = (overrides: Partial<ArchiveFs>): ArchiveFs => ({ ...nodeArchiveFs, ...overrides });

/**
 * A rename that, when it moves `path`, first has a sync tool rename a new version over it: the
 * instant between the last look at a file and the removal of its name.
 */
const swappingAt =
  (path: string, base: ArchiveFs = nodeArchiveFs): ArchiveFs['rename'] =>
  async (from, to) => {
    if (from === path) {
      await writeFile(`${path}.synctmp`, 'a new version, never uploaded');
      await rename(`${path}.synctmp`, path);
    }
    return base.rename(from, to);
  };

/** A file system where link and rename fail as they do between two devices. */
const crossDevice = (overrides: Partial<ArchiveFs> = {}): ArchiveFs =>
  fsWith({
    link: (from, to) => (dirname(from) === dirname(to) ? nodeArchiveFs.link(from, to) : Promise.reject(errno('EXDEV', 'link', from))),
    rename: (from, to) => (dirname(from) === dirname(to) ? nodeArchiveFs.rename(from, to) : Promise.reject(errno('EXDEV', 'rename', from))),
    ...overrides,
  });

describe('archiveFile on one file system', () => {
  it('moves the file into the archive keeping its sub-folders, names with spaces and UTF-8', async () => {
    const source = await put(join(root.path, '2024', 'été à Paris', 'IMG 0001 ü.jpg'), 'photo bytes');
    const before = await lstat(source.path);

    const result = await archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected });

    const target = join(root.archivePath, '2024', 'été à Paris', 'IMG 0001 ü.jpg');
    expect(result).toEqual({ outcome: 'moved', target, method: 'link' });
    expect(await exists(source.path)).toBe(false);
    expect(await readFile(target, 'utf8')).toBe('photo bytes');
    const after = await lstat(target);
    expect(after.ino).toBe(before.ino); // moved, not copied
    expect(after.mtimeMs).toBe(before.mtimeMs);
    expect(await tree(root.archivePath)).toEqual([join('2024', 'été à Paris', 'IMG 0001 ü.jpg')]);
  });

  it('sends each watch folder to its own archive folder', async () => {
    const first: WatchRoot = { path: join(dir.path, 'cam'), archivePath: join(dir.path, 'archive', 'cam') };
    const second: WatchRoot = { path: join(dir.path, 'phone'), archivePath: join(dir.path, 'archive', 'phone') };
    const a = await put(join(first.path, 'sub', 'a.jpg'), 'from the camera');
    const b = await put(join(second.path, 'sub', 'a.jpg'), 'from the phone');

    await archiveFile({ source: a.path, root: first, checksum: a.checksum, expected: a.expected });
    await archiveFile({ source: b.path, root: second, checksum: b.checksum, expected: b.expected });

    expect(await readFile(join(dir.path, 'archive', 'cam', 'sub', 'a.jpg'), 'utf8')).toBe('from the camera');
    expect(await readFile(join(dir.path, 'archive', 'phone', 'sub', 'a.jpg'), 'utf8')).toBe('from the phone');
    expect(await tree(first.path)).toEqual([]);
    expect(await tree(second.path)).toEqual([]);
  });

  it('finds an identical file already in the archive: removes the source, leaves the target alone', async () => {
    const target = join(root.archivePath, 'a.jpg');
    await put(target, 'same bytes', Date.UTC(2020, 0, 1));
    const targetBefore = await lstat(target);
    const source = await put(join(root.path, 'a.jpg'), 'same bytes');

    const result = await archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected });

    expect(result).toEqual({ outcome: 'already-archived', target, method: 'none' });
    expect(await exists(source.path)).toBe(false);
    const targetAfter = await lstat(target);
    expect([targetAfter.ino, targetAfter.mtimeMs, targetAfter.nlink]).toEqual([targetBefore.ino, targetBefore.mtimeMs, 1]);
    expect(await tree(root.archivePath)).toEqual(['a.jpg']);
  });

  it('never overwrites other content: a (1).jpg, then a (2).jpg', async () => {
    await put(join(root.archivePath, 'a.jpg'), 'old');
    const first = await put(join(root.path, 'a.jpg'), 'newer, same name');
    const one = await archiveFile({ source: first.path, root, checksum: first.checksum, expected: first.expected });
    expect(one.target).toBe(join(root.archivePath, 'a (1).jpg'));

    const second = await put(join(root.path, 'a.jpg'), 'newest, same name again');
    const two = await archiveFile({ source: second.path, root, checksum: second.checksum, expected: second.expected });
    expect(two).toEqual({ outcome: 'moved', target: join(root.archivePath, 'a (2).jpg'), method: 'link' });

    expect(await readFile(join(root.archivePath, 'a.jpg'), 'utf8')).toBe('old');
    expect(await readFile(join(root.archivePath, 'a (1).jpg'), 'utf8')).toBe('newer, same name');
    expect(await readFile(join(root.archivePath, 'a (2).jpg'), 'utf8')).toBe('newest, same name again');
    expect(await tree(root.path)).toEqual([]);
  });

  it('shortens a name of 255 bytes to number it, within the file system\'s limit with room for a sidecar\'s .xmp', async () => {
    // 'é' is two bytes: the shortening counts bytes and never cuts a character in half.
    const long = `${'é'.repeat(100)}${'x'.repeat(51)}.jpg`;
    expect(Buffer.byteLength(long)).toBe(255);
    await put(join(root.archivePath, long), 'old');
    const source = await put(join(root.path, long), 'newer, same name');
    for (const fs of [nodeArchiveFs, crossDevice()]) {
      const result = await archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected, fs });
      const numbered = `${'é'.repeat(100)}${'x'.repeat(43)} (1).jpg`;
      expect(Buffer.byteLength(numbered)).toBe(251);
      expect(result.target).toBe(join(root.archivePath, numbered));
      expect(await readFile(result.target, 'utf8')).toBe('newer, same name');
      await rm(result.target);
      await put(source.path, 'newer, same name');
    }
  });

  it('recognises the same content under a numbered name, and a same-size file with other bytes as different', async () => {
    await put(join(root.archivePath, 'a.jpg'), 'AAAA'); // same size as the source, other bytes
    await put(join(root.archivePath, 'a (1).jpg'), 'BBBB');
    const source = await put(join(root.path, 'a.jpg'), 'BBBB');
    const result = await archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected });
    expect(result).toEqual({ outcome: 'already-archived', target: join(root.archivePath, 'a (1).jpg'), method: 'none' });
    expect(await exists(source.path)).toBe(false);
    expect(await tree(root.archivePath)).toEqual(['a (1).jpg', 'a.jpg']);
  });

  it('treats a folder in the way as a taken name', async () => {
    await mkdir(join(root.archivePath, 'a.jpg'), { recursive: true });
    const source = await put(join(root.path, 'a.jpg'), 'x');
    const result = await archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected });
    expect(result.target).toBe(join(root.archivePath, 'a (1).jpg'));
  });

  it('accepts an upper-case checksum', async () => {
    await put(join(root.archivePath, 'a.jpg'), 'same');
    const source = await put(join(root.path, 'a.jpg'), 'same');
    const result = await archiveFile({ source: source.path, root, checksum: source.checksum.toUpperCase(), expected: source.expected });
    expect(result.outcome).toBe('already-archived');
  });

  for (const [way, make] of [
    ['a hard link', () => nodeArchiveFs],
    ['a rename (no hard links)', () => fsWith({ link: (from) => Promise.reject(errno('EPERM', 'link', from)) })],
    ['a copy to another disk', () => crossDevice({})],
  ] as const) {
    it(`by ${way}, leaves another file of the same size and mtime renamed over the one uploaded, and archives nothing`, async () => {
      const uploaded = await put(join(root.path, 'a.jpg'), 'the bytes uploaded');
      const { ino, dev } = await lstat(uploaded.path);
      const other = await put(join(root.path, '.a.jpg.sync'), 'another same size!');
      expect(other.expected).toEqual(uploaded.expected);
      await rename(other.path, uploaded.path);
      const attempt = archiveFile({ source: uploaded.path, root, checksum: uploaded.checksum, expected: uploaded.expected, identity: { ino, dev }, fs: make() });
      await expect(attempt).rejects.toBeInstanceOf(SourceChangedError);
      expect(await readFile(uploaded.path, 'utf8')).toBe('another same size!');
      expect(await tree(root.archivePath)).toEqual([]);
    });
  }

  it('renames where the file system has no hard links, still without overwriting', async () => {
    await put(join(root.archivePath, 'a.jpg'), 'other');
    const source = await put(join(root.path, 'a.jpg'), 'mine');
    const fs = fsWith({ link: (from) => Promise.reject(errno('EPERM', 'link', from)) });
    const result = await archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected, fs });
    expect(result).toEqual({ outcome: 'moved', target: join(root.archivePath, 'a (1).jpg'), method: 'rename' });
    expect(await readFile(join(root.archivePath, 'a.jpg'), 'utf8')).toBe('other');
    expect(await readFile(result.target, 'utf8')).toBe('mine');
    expect(await exists(source.path)).toBe(false);
  });

  it('refuses a source that changed since the upload, and moves nothing', async () => {
    const source = await put(join(root.path, 'sub', 'a.jpg'), 'uploaded');
    await appendFile(source.path, ' and edited');

    const attempt = archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected });

    await expect(attempt).rejects.toBeInstanceOf(SourceChangedError);
    await expect(attempt).rejects.toMatchObject({ actual: { size: 'uploaded and edited'.length } });
    expect(await readFile(source.path, 'utf8')).toBe('uploaded and edited');
    // The link is checked after it is made, so the archive folder may exist, but it holds nothing.
    expect(await tree(root.archivePath)).toEqual([]);
  });

  it('reports a source that vanished since the upload as changed', async () => {
    const source = await put(join(root.path, 'sub', 'a.jpg'), 'uploaded');
    await rm(source.path);
    const attempt = archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected });
    await expect(attempt).rejects.toBeInstanceOf(SourceChangedError);
    await expect(attempt).rejects.toMatchObject({ actual: null });
    expect(await tree(root.archivePath)).toEqual([]);
  });

  it('keeps a changed source even when the archive already holds the uploaded version', async () => {
    const source = await put(join(root.path, 'a.jpg'), 'uploaded');
    await put(join(root.archivePath, 'a.jpg'), 'uploaded');
    await appendFile(source.path, ' and edited');
    await expect(
      archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected }),
    ).rejects.toBeInstanceOf(SourceChangedError);
    expect(await readFile(source.path, 'utf8')).toBe('uploaded and edited');
    expect(await tree(root.archivePath)).toEqual(['a.jpg']);
  });

  it('shares folder fsyncs between files archived into one folder at the same time', async () => {
    const folderSyncs: string[] = [];
    let releaseFirst: () => void = () => undefined;
    const firstHeld = new Promise<void>((resolve) => (releaseFirst = resolve));
    const linked: string[] = [];
    const fs = fsWith({
      link: async (from, to) => {
        await nodeArchiveFs.link(from, to);
        linked.push(to);
      },
      open: async (path, flags) => {
        const handle = await nodeArchiveFs.open(path, flags);
        if (path !== join(root.archivePath, 'sub')) return handle;
        return {
          sync: async () => {
            folderSyncs.push(path);
            // The first fsync is slow: every file linked meanwhile must wait for the next one.
            if (folderSyncs.length === 1) await firstHeld;
            await handle.sync();
          },
          close: () => handle.close(),
        };
      },
    });
    const files = await Promise.all(['a', 'b', 'c', 'd', 'e'].map((name) => put(join(root.path, 'sub', `${name}.jpg`), name)));
    const first = archiveFile({ source: files[0]!.path, root, checksum: files[0]!.checksum, expected: files[0]!.expected, fs });
    await waitFor(() => folderSyncs.length === 1);
    const others = files
      .slice(1)
      .map((file) => archiveFile({ source: file.path, root, checksum: file.checksum, expected: file.expected, fs }));
    // Every other file is linked (the step before its fsync) while the first fsync still runs;
    // none may count on that fsync, which started before its link.
    await waitFor(() => linked.length === files.length);
    await new Promise((resolve) => setImmediate(resolve));
    releaseFirst();
    await Promise.all([first, ...others]);
    expect(folderSyncs).toHaveLength(2);
    expect(await tree(root.archivePath)).toEqual(['sub/a.jpg', 'sub/b.jpg', 'sub/c.jpg', 'sub/d.jpg', 'sub/e.jpg']);
  });

  it('creates a missing archive folder once, and again if it is removed between files', async () => {
    const calls: string[] = [];
    const fs = fsWith({
      mkdir: (path, options) => {
        calls.push(path);
        return nodeArchiveFs.mkdir(path, options);
      },
    });
    const first = await put(join(root.path, 'sub', 'a.jpg'), 'one');
    const second = await put(join(root.path, 'sub', 'b.jpg'), 'two');
    const third = await put(join(root.path, 'sub', 'c.jpg'), 'three');
    const archive = (file: typeof first) =>
      archiveFile({ source: file.path, root, checksum: file.checksum, expected: file.expected, fs });
    await archive(first);
    await archive(second);
    expect(calls).toEqual([join(root.archivePath, 'sub')]);
    await rm(root.archivePath, { recursive: true });
    await archive(third);
    expect(calls).toEqual([join(root.archivePath, 'sub'), join(root.archivePath, 'sub')]);
    expect(await tree(root.archivePath)).toEqual(['sub/c.jpg']);
  });

  it('refuses a source whose mtime alone changed', async () => {
    const source = await put(join(root.path, 'a.jpg'), 'uploaded');
    await utimes(source.path, new Date(), new Date());
    await expect(
      archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected }),
    ).rejects.toBeInstanceOf(SourceChangedError);
    expect(await exists(source.path)).toBe(true);
  });

  it('reports a source that is gone as changed, with no actual version', async () => {
    const source = await put(join(root.path, 'a.jpg'), 'uploaded');
    await rm(source.path);
    await expect(
      archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected }),
    ).rejects.toMatchObject({ name: 'SourceChangedError', actual: null });
  });

  /** When a late write lands: the file system with `write` run at that moment. */
  const lateWrites: [string, (write: () => Promise<void>) => Partial<ArchiveFs>][] = [
    [
      'between the check and the link',
      (write) => ({
        link: async (from, to) => {
          await nodeArchiveFs.link(from, to);
          // Into the archive: not a name put back beside the source.
          if (dirname(from) !== dirname(to)) await write();
        },
      }),
    ],
    [
      'while the folder is fsynced',
      (write) => ({
        open: async (path, flags) => {
          if (path === root.archivePath) await write();
          return nodeArchiveFs.open(path, flags);
        },
      }),
    ],
  ];
  for (const [moment, writingAt] of lateWrites) {
    it(`takes its link back when the source is written to ${moment}`, async () => {
      const source = await put(join(root.path, 'a.jpg'), 'uploaded');
      const fs = fsWith(writingAt(() => appendFile(source.path, ' + a late write')));
      await expect(
        archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected, fs }),
      ).rejects.toBeInstanceOf(SourceChangedError);
      expect(await readFile(source.path, 'utf8')).toBe('uploaded + a late write');
      expect((await lstat(source.path)).nlink).toBe(1);
      expect(await tree(root.archivePath)).toEqual([]);
    });
  }

  it('leaves a new file put at the source path while the folder is fsynced, and keeps the uploaded one archived', async () => {
    const source = await put(join(root.path, 'a.jpg'), 'uploaded');
    const fs = fsWith({
      open: async (path, flags) => {
        // A sync tool writes the new version beside the file and renames it over the old one.
        if (path === root.archivePath) {
          await put(join(root.path, '.a.jpg.tmp'), 'a new version, never uploaded', Date.UTC(2024, 0, 1));
          await rename(join(root.path, '.a.jpg.tmp'), source.path);
        }
        return nodeArchiveFs.open(path, flags);
      },
    });
    const result = await archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected, fs });
    expect(result).toEqual({ outcome: 'moved', target: join(root.archivePath, 'a.jpg'), method: 'link' });
    expect(await readFile(source.path, 'utf8')).toBe('a new version, never uploaded');
    expect(await readFile(join(root.archivePath, 'a.jpg'), 'utf8')).toBe('uploaded');
  });

  it('leaves a new file renamed over the source in the instant before its name goes, and keeps the uploaded one archived', async () => {
    const source = await put(join(root.path, 'a.jpg'), 'uploaded');
    const fs = fsWith({ rename: swappingAt(source.path) });
    const result = await archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected, fs });
    expect(result).toEqual({ outcome: 'moved', target: join(root.archivePath, 'a.jpg'), method: 'link' });
    expect(await readFile(source.path, 'utf8')).toBe('a new version, never uploaded');
    expect(await readFile(join(root.archivePath, 'a.jpg'), 'utf8')).toBe('uploaded');
    expect(await readdir(root.path)).toEqual(['a.jpg']);
  });

  it('loses nothing when two moves of one file run at once (a sidecar two photos share)', async () => {
    for (let round = 0; round < 20; round++) {
      const source = await put(join(root.path, `IMG_${round}.xmp`), `sidecar ${round}`);
      const move = (): Promise<unknown> =>
        archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected }).catch((error: unknown) => {
          if (!(error instanceof SourceChangedError)) throw error;
        });
      await Promise.all([move(), move()]);
      expect(await readFile(join(root.archivePath, `IMG_${round}.xmp`), 'utf8')).toBe(`sidecar ${round}`);
    }
    expect(await readdir(root.path)).toEqual([]);
  });

  it('keeps the archived original when the source was deleted before its name went', async () => {
    const source = await put(join(root.path, 'a.jpg'), 'uploaded');
    const fs = fsWith({
      rename: async (from, to) => {
        if (from === source.path) await rm(source.path);
        return nodeArchiveFs.rename(from, to);
      },
    });
    const result = await archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected, fs });
    expect(result).toEqual({ outcome: 'moved', target: join(root.archivePath, 'a.jpg'), method: 'link' });
    expect(await readFile(join(root.archivePath, 'a.jpg'), 'utf8')).toBe('uploaded');
  });

  it('fails with ArchiveError and the errno code when the move is refused, leaving the source', async () => {
    const source = await put(join(root.path, 'a.jpg'), 'x');
    const fs = fsWith({ link: (from) => Promise.reject(errno('EACCES', 'link', from)) });
    const attempt = archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected, fs });
    await expect(attempt).rejects.toBeInstanceOf(ArchiveError);
    await expect(attempt).rejects.toMatchObject({ step: 'move', code: 'EACCES', target: undefined });
    await expect(attempt).rejects.toThrow(/EACCES/);
    expect(await exists(source.path)).toBe(true);
    expect(await tree(root.archivePath)).toEqual([]);
  });

  it('takes its link back when the source folder cannot be written to, so that the source stays the only name', async () => {
    const source = await put(join(root.path, 'a.jpg'), 'x');
    for (const code of ['EACCES', 'EPERM', 'EROFS']) {
      // Not the owner of the folder (a sync tool's, in Docker under another user), or immutable.
      const fs = fsWith({ rename: (from, to) => Promise.reject(errno(code, 'rename', `${from} -> ${to}`)) });
      const attempt = archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected, fs });
      await expect(attempt).rejects.toBeInstanceOf(SourceUnwritableError);
      await expect(attempt).rejects.toMatchObject({ path: source.path, code });
      expect(await readdir(root.path)).toEqual(['a.jpg']);
      expect((await lstat(source.path)).nlink, 'no second name of the file').toBe(1);
      expect(await tree(root.archivePath)).toEqual([]);
    }
  });

  it('tells a source folder that refuses the move from an archive folder that does', async () => {
    const source = await put(join(root.path, 'a.jpg'), 'x');
    // Another user's file in another user's folder: no hard link to it (protected_hardlinks), no rename out of it.
    const fs = fsWith({
      link: (from) => Promise.reject(errno('EPERM', 'link', from)),
      rename: (from) => Promise.reject(errno('EACCES', 'rename', from)),
      writable: (folder) => (folder === root.path ? Promise.reject(errno('EACCES', 'access', folder)) : nodeArchiveFs.writable(folder)),
    });
    const attempt = archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected, fs });
    await expect(attempt).rejects.toBeInstanceOf(SourceUnwritableError);
    await expect(attempt).rejects.toThrow(`${root.path} cannot be written to by this user (permission denied)`);
    expect(await readdir(root.path)).toEqual(['a.jpg']);
    expect(await tree(root.archivePath)).toEqual([]);
  });

  it('never makes the archive folder again once it is gone (a disk taken away), with keepingArchiveDirectory', async () => {
    const fs = keepingArchiveDirectory(nodeArchiveFs, root.archivePath);
    await mkdir(root.archivePath);
    const first = await put(join(root.path, 'sub', 'a.jpg'), 'one');
    const second = await put(join(root.path, 'sub', 'b.jpg'), 'two');
    const archive = (file: typeof first) =>
      archiveFile({ source: file.path, root, checksum: file.checksum, expected: file.expected, fs });
    await archive(first);
    expect(await tree(root.archivePath)).toEqual(['sub/a.jpg']);

    await rm(root.archivePath, { recursive: true });
    await expect(archive(second)).rejects.toMatchObject({
      step: 'create-folder',
      code: 'ENOENT',
      message: expect.stringContaining(`the archive folder ${root.archivePath} is gone (its disk unmounted?)`) as unknown,
    });
    expect(await exists(root.archivePath)).toBe(false);
    expect(await exists(second.path)).toBe(true);

    // The disk is back: the next try archives it.
    await mkdir(root.archivePath);
    await archive(second);
    expect(await tree(root.archivePath)).toEqual(['sub/b.jpg']);
  });

  it('puts nothing in the archive while its disk is known to be gone, on one disk or across two', async () => {
    await mkdir(root.archivePath);
    let gone: string | undefined = 'the disk is gone';
    const source = await put(join(root.path, 'a.jpg'), 'one');
    for (const base of [nodeArchiveFs, crossDevice()]) {
      const fs = keepingArchiveDirectory(base, root.archivePath, () => gone);
      const attempt = archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected, fs });
      await expect(attempt).rejects.toMatchObject({ code: 'ENODEV', message: expect.stringContaining('the disk is gone') as unknown });
      expect(await tree(root.archivePath)).toEqual([]);
      expect(await exists(source.path)).toBe(true);
    }
    gone = undefined;
    const fs = keepingArchiveDirectory(crossDevice(), root.archivePath, () => gone);
    await archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected, fs });
    expect(await tree(root.archivePath)).toEqual(['a.jpg']);
  });

  it('puts nothing in an archive folder that is no longer on its disk (unmounted since the mount table was read)', async () => {
    await mkdir(root.archivePath);
    const source = await put(join(root.path, 'a.jpg'), 'one');
    const here = (await lstat(root.archivePath)).dev;
    // The disk mounted at the archive folder went: the folder is the empty one beneath, on another device.
    let device = here + 1;
    for (const base of [nodeArchiveFs, crossDevice()]) {
      const fs = keepingArchiveDirectory(base, root.archivePath, () => undefined, () => device);
      const attempt = archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected, fs });
      await expect(attempt).rejects.toMatchObject({ code: 'ENODEV', message: expect.stringContaining('is no longer on its disk') as unknown });
      expect(await tree(root.archivePath)).toEqual([]);
      expect(await exists(source.path)).toBe(true);
    }
    device = here;
    const fs = keepingArchiveDirectory(nodeArchiveFs, root.archivePath, () => undefined, () => device);
    await archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected, fs });
    expect(await tree(root.archivePath)).toEqual(['a.jpg']);
  });

  it('fails with ArchiveError naming the folder when it cannot be created', async () => {
    const source = await put(join(root.path, 'sub', 'a.jpg'), 'x');
    const fs = fsWith({ mkdir: (path) => Promise.reject(errno('EACCES', 'mkdir', path)) });
    const attempt = archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected, fs });
    await expect(attempt).rejects.toMatchObject({ step: 'create-folder', code: 'EACCES', path: join(root.archivePath, 'sub') });
    expect(await exists(source.path)).toBe(true);
  });

  it('says the file is archived when only removing the source failed, and a retry finishes the job', async () => {
    const source = await put(join(root.path, 'a.jpg'), 'x');
    // A passing failure: a network share's file that another program has open, a disk error.
    const fs = fsWith({
      rename: (from, to) => (from === source.path ? Promise.reject(errno('EBUSY', 'rename', from)) : nodeArchiveFs.rename(from, to)),
    });
    const target = join(root.archivePath, 'a.jpg');
    await expect(
      archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected, fs }),
    ).rejects.toMatchObject({ name: 'ArchiveError', step: 'remove-source', code: 'EBUSY', target });
    expect(await exists(source.path)).toBe(true);

    const retry = await archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected });
    expect(retry).toEqual({ outcome: 'already-archived', target, method: 'none' });
    expect(await exists(source.path)).toBe(false);
  });

  it('refuses a source outside its watch folder', async () => {
    const source = await put(join(dir.path, 'elsewhere', 'a.jpg'), 'x');
    await expect(
      archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected }),
    ).rejects.toMatchObject({ name: 'ArchiveError', step: 'resolve-target' });
    expect(await exists(source.path)).toBe(true);
  });
});

describe('archiveFile across file systems (EXDEV injected)', () => {
  it('copies, verifies and then removes the source: exact bytes, times kept, no temporary left', async () => {
    const bytes = Buffer.alloc(3 * 1024 * 1024 + 5, 7);
    const source = await put(join(root.path, 'sub dir', 'clip é.mp4'), bytes);

    const result = await archiveFile({
      source: source.path,
      root,
      checksum: source.checksum,
      expected: source.expected,
      fs: crossDevice(),
    });

    const target = join(root.archivePath, 'sub dir', 'clip é.mp4');
    expect(result).toEqual({ outcome: 'moved', target, method: 'copy' });
    expect((await readFile(target)).equals(bytes)).toBe(true);
    expect((await stat(target)).mtimeMs).toBe(source.expected.mtimeMs);
    expect(await exists(source.path)).toBe(false);
    expect(await tree(root.archivePath)).toEqual([join('sub dir', 'clip é.mp4')]);
  });

  it('leaves a new file renamed over the source in the instant before its name goes, and keeps the copy of the uploaded one', async () => {
    const source = await put(join(root.path, 'a.jpg'), 'uploaded');
    const base = crossDevice();
    const fs = { ...base, rename: swappingAt(source.path, base) };
    const result = await archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected, fs });
    expect(result).toEqual({ outcome: 'moved', target: join(root.archivePath, 'a.jpg'), method: 'copy' });
    expect(await readFile(source.path, 'utf8')).toBe('a new version, never uploaded');
    expect(await readFile(join(root.archivePath, 'a.jpg'), 'utf8')).toBe('uploaded');
    expect(await readdir(root.path)).toEqual(['a.jpg']);
  });

  it('takes its copy back out when the source is written to in the instant before its name goes', async () => {
    const source = await put(join(root.path, 'a.jpg'), 'uploaded');
    const base = crossDevice();
    const fs: ArchiveFs = {
      ...base,
      rename: async (from, to) => {
        if (from === source.path) await appendFile(source.path, ' + a late write');
        return base.rename(from, to);
      },
    };
    await expect(archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected, fs })).rejects.toBeInstanceOf(SourceChangedError);
    expect(await readFile(source.path, 'utf8')).toBe('uploaded + a late write');
    expect(await readdir(root.path)).toEqual(['a.jpg']);
    expect(await tree(root.archivePath)).toEqual([]);
  });

  it('copies nothing from a folder that cannot be written to (a card with its lock switch on)', async () => {
    const source = await put(join(root.path, 'card', 'a.jpg'), 'x');
    let copies = 0;
    const fs = crossDevice({
      writable: (folder) => (folder === dirname(source.path) ? Promise.reject(errno('EROFS', 'access', folder)) : nodeArchiveFs.writable(folder)),
      copyFile: (from, to, mode) => {
        copies++;
        return nodeArchiveFs.copyFile(from, to, mode);
      },
    });
    const attempt = archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected, fs });
    await expect(attempt).rejects.toBeInstanceOf(SourceUnwritableError);
    await expect(attempt).rejects.toThrow(`${dirname(source.path)} is on a read-only file system`);
    expect(copies).toBe(0);
    expect(await exists(source.path)).toBe(true);
    expect(await tree(root.archivePath)).toEqual([]);
  });

  it('takes its copy back out when the source folder turns out not to be writable at the end', async () => {
    const source = await put(join(root.path, 'a.jpg'), 'x');
    const base = crossDevice();
    const fs = { ...base, rename: (from: string, to: string) => (from === source.path ? Promise.reject(errno('EROFS', 'rename', from)) : base.rename(from, to)) };
    await expect(archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected, fs })).rejects.toBeInstanceOf(SourceUnwritableError);
    expect(await exists(source.path)).toBe(true);
    expect(await tree(root.archivePath)).toEqual([]);
  });

  it('copies to the next free name when other content holds the name', async () => {
    await put(join(root.archivePath, 'a.jpg'), 'other');
    const source = await put(join(root.path, 'a.jpg'), 'mine');
    const result = await archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected, fs: crossDevice() });
    expect(result).toEqual({ outcome: 'moved', target: join(root.archivePath, 'a (1).jpg'), method: 'copy' });
    expect(await tree(root.archivePath)).toEqual(['a (1).jpg', 'a.jpg']);
  });

  it('does not copy at all when the archive already holds the same content', async () => {
    await put(join(root.archivePath, 'a.jpg'), 'mine');
    const source = await put(join(root.path, 'a.jpg'), 'mine');
    let copies = 0;
    const fs = crossDevice({
      copyFile: (from, to, mode) => {
        copies++;
        return nodeArchiveFs.copyFile(from, to, mode);
      },
    });
    const result = await archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected, fs });
    expect(result.outcome).toBe('already-archived');
    expect(copies).toBe(0);
    expect(await exists(source.path)).toBe(false);
  });

  it('keeps the source and leaves no temporary when the disk fills up during the copy', async () => {
    const source = await put(join(root.path, 'a.jpg'), Buffer.alloc(100_000, 1));
    let temporary = '';
    const fs = crossDevice({
      copyFile: async (from, to, mode) => {
        temporary = to;
        // Part of the bytes made it to disk before the failure.
        await writeFile(to, Buffer.alloc(4096, 1), { flag: mode === 0 ? 'w' : 'wx' });
        throw errno('ENOSPC', 'copyfile', to);
      },
    });

    const attempt = archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected, fs });

    await expect(attempt).rejects.toBeInstanceOf(ArchiveError);
    await expect(attempt).rejects.toMatchObject({ step: 'copy', code: 'ENOSPC' });
    // Said in its own words, with its fix, and without the temporary's name.
    await expect(attempt).rejects.toThrow(
      `archive failed at copy of ${source.path}: ENOSPC: the archive's disk is full; the file stays in the watch folder until there is room (fix: free space on it)`,
    );
    expect(isArchiveTemporary(temporary.split('/').pop() ?? '')).toBe(true);
    expect(dirname(temporary)).toBe(root.archivePath); // in the target folder, so the final link is on one device
    expect(await exists(temporary)).toBe(false);
    expect(await tree(root.archivePath)).toEqual([]);
    expect((await readFile(source.path)).length).toBe(100_000);
  });

  it('keeps the source when the copy does not match what was uploaded', async () => {
    const source = await put(join(root.path, 'a.jpg'), 'the uploaded bytes');
    const fs = crossDevice({
      copyFile: async (from, to, mode) => {
        await copyFile(from, to, mode);
        await writeFile(to, 'the uploaded byteZ'); // same size, one byte flipped in transit
      },
    });

    const attempt = archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected, fs });

    await expect(attempt).rejects.toMatchObject({ name: 'ArchiveError', step: 'verify' });
    await expect(attempt).rejects.toThrow(/does not match what was uploaded/);
    expect(await tree(root.archivePath)).toEqual([]);
    expect(await readFile(source.path, 'utf8')).toBe('the uploaded bytes');
  });

  it('keeps the source when the fsync of the copy fails', async () => {
    const source = await put(join(root.path, 'a.jpg'), 'bytes');
    const fs = crossDevice({
      open: (path, flags) =>
        path.includes('.iau-tmp-') ? Promise.reject(errno('EIO', 'fsync', path)) : nodeArchiveFs.open(path, flags),
    });
    await expect(
      archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected, fs }),
    ).rejects.toMatchObject({ name: 'ArchiveError', step: 'fsync', code: 'EIO' });
    expect(await tree(root.archivePath)).toEqual([]);
    expect(await exists(source.path)).toBe(true);
  });

  it('reports a source written to during the copy as changed and takes nothing away from it', async () => {
    const source = await put(join(root.path, 'a.jpg'), 'uploaded');
    const fs = crossDevice({
      copyFile: async (from, to, mode) => {
        await copyFile(from, to, mode);
        await appendFile(from, ' + written during the copy');
      },
    });
    await expect(
      archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected, fs }),
    ).rejects.toBeInstanceOf(SourceChangedError);
    expect(await readFile(source.path, 'utf8')).toBe('uploaded + written during the copy');
    expect(await tree(root.archivePath)).toEqual([]);
  });

  it('renames the verified copy into place where there are no hard links', async () => {
    const source = await put(join(root.path, 'a.jpg'), 'mine');
    await put(join(root.archivePath, 'a.jpg'), 'other');
    const fs = crossDevice({
      link: (from) => Promise.reject(errno('ENOTSUP', 'link', from)),
      rename: (from, to) =>
        dirname(from) === dirname(to) ? nodeArchiveFs.rename(from, to) : Promise.reject(errno('EXDEV', 'rename', from)),
    });
    const result = await archiveFile({ source: source.path, root, checksum: source.checksum, expected: source.expected, fs });
    expect(result).toEqual({ outcome: 'moved', target: join(root.archivePath, 'a (1).jpg'), method: 'copy' });
    expect(await tree(root.archivePath)).toEqual(['a (1).jpg', 'a.jpg']);
    expect(await readFile(join(root.archivePath, 'a.jpg'), 'utf8')).toBe('other');
    expect(await exists(source.path)).toBe(false);
  });
});

describe('archiveFile across real devices', async () => {
  // /dev/shm is a tmpfs; when it is a different device from the temp folder, link and rename
  // really fail with EXDEV between them.
  const shm = '/dev/shm';
  const shmDevice = await stat(shm).then(
    (stats) => stats.dev,
    () => undefined,
  );
  const tmpDevice = (await stat(tmpdir())).dev;
  const skip = shmDevice === undefined || shmDevice === tmpDevice;

  it.skipIf(skip)(
    `moves a file from ${tmpdir()} to ${shm} (skipped when ${shm} is missing or on the same device as the temp folder)`,
    async () => {
      const archive = await mkdtemp(join(shm, 'iau-archive-'));
      try {
        const crossRoot: WatchRoot = { path: root.path, archivePath: archive };
        const bytes = Buffer.alloc(2 * 1024 * 1024 + 1, 42);
        const source = await put(join(root.path, 'deep', 'fête 1.mov'), bytes);
        const result = await archiveFile({ source: source.path, root: crossRoot, checksum: source.checksum, expected: source.expected });
        expect(result).toEqual({ outcome: 'moved', target: join(archive, 'deep', 'fête 1.mov'), method: 'copy' });
        expect((await readFile(result.target)).equals(bytes)).toBe(true);
        expect(await exists(source.path)).toBe(false);
        expect(await tree(archive)).toEqual([join('deep', 'fête 1.mov')]);
      } finally {
        await rm(archive, { recursive: true, force: true });
      }
    },
  );
});

describe('removeStaleTemporaries', () => {
  it('removes temporaries anywhere in the archive and nothing else', async () => {
    const archive = root.archivePath;
    await put(join(archive, '.a.jpg.iau-tmp-0123456789ab'), 'half');
    await put(join(archive, 'deep', 'er', '.clip é.mp4.iau-tmp-abcdefabcdef'), 'half');
    await put(join(archive, 'a.jpg'), 'keep');
    await put(join(archive, '.hidden'), 'keep');
    await put(join(archive, '.a.jpg.iau-tmp-nothex'), 'keep: not our pattern');
    await put(join(archive, 'a.jpg.iau-tmp-0123456789ab'), 'keep: not hidden');

    expect(await removeStaleTemporaries(archive)).toBe(2);
    expect(await tree(archive)).toEqual(['.a.jpg.iau-tmp-nothex', '.hidden', 'a.jpg', 'a.jpg.iau-tmp-0123456789ab']);
    expect(await removeStaleTemporaries(archive)).toBe(0);
  });

  it('counts nothing when the archive does not exist yet', async () => {
    expect(await removeStaleTemporaries(join(dir.path, 'no archive yet'))).toBe(0);
  });
});

describe('numberedName', () => {
  it('numbers before the extension', () => {
    expect(numberedName('/a/photo.jpg', 0)).toBe('/a/photo.jpg');
    expect(numberedName('/a/photo.jpg', 2)).toBe('/a/photo (2).jpg');
    expect(numberedName('/a/archive.tar.gz', 1)).toBe('/a/archive.tar (1).gz');
    expect(numberedName('/a/.hidden', 1)).toBe('/a/.hidden (1)');
    expect(numberedName('/a/no extension', 1)).toBe('/a/no extension (1)');
    expect(numberedName(`/a/${'ü'.repeat(125)}a.jpg`, 12)).toBe(`/a/${'ü'.repeat(121)} (12).jpg`);
  });
});
