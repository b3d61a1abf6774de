import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { WatchRoot } from '../../src/config.js';
import { disposeOriginal, finishInterrupted, type ConfirmedFile } from '../../src/pipeline/after-upload.js';
import { nodeArchiveFs, SourceChangedError, type ArchiveFs } from '../../src/pipeline/archive.js';
import { makeRecorder, type FileState } from '../../src/pipeline/states.js';
import { sha1, writeMedia } from '../helpers/media.js';
import { makeTempDir } from '../helpers/temp-dir.js';

let temp: { path: string; remove: () => Promise<void> };
let root: WatchRoot;
let recorded: FileState[];
/** Folders the code under test listed. */
let listed: string[];
/** The real file system, counting listings. */
let fs: ArchiveFs;

beforeEach(async () => {
  temp = await makeTempDir('iau-after-upload-');
  root = { path: temp.path, archivePath: join(temp.path, 'archive') };
  recorded = [];
  listed = [];
  fs = {
    ...nodeArchiveFs,
    readdir: (path) => {
      listed.push(path);
      return nodeArchiveFs.readdir(path);
    },
  };
});

afterEach(async () => {
  await temp.remove();
});

const record = makeRecorder(
  async (_file, state) => void recorded.push(state),
  (_file, state) => void recorded.push(state),
);

/** `sidecar`: the name of the sidecar that went to the server with it, as it is now. */
async function confirmed(name: string, bytes: Buffer, sidecar?: string): Promise<ConfirmedFile> {
  const path = join(root.path, name);
  const info = await stat(path);
  const file: ConfirmedFile = { path, root, size: info.size, mtimeMs: info.mtimeMs, checksum: sha1(bytes) };
  if (sidecar !== undefined) {
    const sent = await stat(join(root.path, sidecar));
    file.sidecar = { path: join(root.path, sidecar), size: sent.size, mtimeMs: sent.mtimeMs };
  }
  return file;
}

async function dispose(name: string, files: Map<string, Buffer>, mode: 'delete' | 'keep', sidecar?: string): Promise<void> {
  await disposeOriginal(await confirmed(name, files.get(name) ?? Buffer.alloc(0), sidecar), mode, record, fs);
}

describe('delete mode', () => {
  it('removes each original with the sidecar sent with it, without listing the folder, and leaves the rest', async () => {
    const files = await writeMedia(root.path, ['a.jpg', 'b.jpg', 'c.JPG', 'other.jpg']);
    await writeMedia(root.path, ['a.jpg.xmp', 'c.JPG.XMP', 'other.jpg.xmp', 'unrelated.xmp'], 100);

    await dispose('a.jpg', files, 'delete', 'a.jpg.xmp');
    await dispose('b.jpg', files, 'delete');
    await dispose('c.JPG', files, 'delete', 'c.JPG.XMP');

    expect((await readdir(root.path)).sort()).toEqual(['other.jpg', 'other.jpg.xmp', 'unrelated.xmp']);
    // A camera folder holds thousands of files: a listing per deleted file would cost the square of that.
    expect(listed).toEqual([]);
    expect(recorded).toEqual(['deleting', 'deleted', 'deleting', 'deleted', 'deleting', 'deleted']);
  });

  it('keeps a sidecar that did not go to the server, or was written since it went', async () => {
    const files = await writeMedia(root.path, ['g.jpg', 'h.jpg']);
    await writeMedia(root.path, ['g.jpg.xmp', 'h.jpg.xmp'], 100);
    // The server already had g.jpg: its sidecar was not sent, and what it holds is only here.
    await dispose('g.jpg', files, 'delete');
    const h = await confirmed('h.jpg', files.get('h.jpg') ?? Buffer.alloc(0), 'h.jpg.xmp');
    await writeFile(join(root.path, 'h.jpg.xmp'), 'a rating added after the upload');
    await disposeOriginal(h, 'delete', record, fs);

    expect((await readdir(root.path)).sort()).toEqual(['g.jpg.xmp', 'h.jpg.xmp']);
    expect(await readFile(join(root.path, 'h.jpg.xmp'), 'utf8')).toBe('a rating added after the upload');
  });

  it('leaves a new file put at its path while the deletion was being recorded', async () => {
    const files = await writeMedia(root.path, ['a.jpg']);
    const file = await confirmed('a.jpg', files.get('a.jpg') ?? Buffer.alloc(0));
    const replacing = makeRecorder(
      async (_file, state) => {
        recorded.push(state);
        // The commit takes a moment: another picture arrives under the same name meanwhile.
        if (state === 'deleting') await writeFile(file.path, 'a new version, never uploaded');
      },
      (_file, state) => void recorded.push(state),
    );
    await expect(disposeOriginal(file, 'delete', replacing, fs)).rejects.toBeInstanceOf(SourceChangedError);
    expect(await readFile(file.path, 'utf8')).toBe('a new version, never uploaded');
    expect(recorded).toEqual(['deleting']);
  });

  it('leaves a new file renamed over the original in the instant before its name goes (a sync tool), and sends it round', async () => {
    const files = await writeMedia(root.path, ['a.jpg']);
    const file = await confirmed('a.jpg', files.get('a.jpg') ?? Buffer.alloc(0));
    const swapping: ArchiveFs = {
      ...fs,
      rename: async (from, to) => {
        // The last look said "the uploaded version"; a sync tool renames its new version over it now.
        if (from === file.path) {
          await writeFile(join(root.path, '.a.jpg.tmp'), 'a new version, never uploaded');
          await rename(join(root.path, '.a.jpg.tmp'), file.path);
        }
        return fs.rename(from, to);
      },
    };
    await expect(disposeOriginal(file, 'delete', record, swapping)).rejects.toBeInstanceOf(SourceChangedError);
    expect(await readFile(file.path, 'utf8')).toBe('a new version, never uploaded');
    expect(await readdir(root.path)).toEqual(['a.jpg']);
    expect(recorded).toEqual(['deleting']);
  });

  it('finishes a deletion a crash interrupted after the name was moved aside, and puts back anything else moved aside', async () => {
    const files = await writeMedia(root.path, ['a.jpg', 'b.jpg']);
    const a = await confirmed('a.jpg', files.get('a.jpg') ?? Buffer.alloc(0));
    const b = await confirmed('b.jpg', files.get('b.jpg') ?? Buffer.alloc(0));
    await rename(a.path, join(root.path, '.a.jpg.iau-aside-0123456789ab'));
    // b's name was moved aside when a new version had just replaced the one uploaded.
    await writeFile(join(root.path, '.b.jpg.iau-aside-0123456789ab'), 'a new version, never uploaded');
    await rm(b.path);
    expect(await finishInterrupted(a, 'deleting', record, fs)).toEqual({ mode: 'delete' });
    expect(await finishInterrupted(b, 'deleting', record, fs)).toEqual({ mode: 'delete' });
    expect(await readdir(root.path)).toEqual(['b.jpg']);
    expect(await readFile(b.path, 'utf8')).toBe('a new version, never uploaded');
  });

  it('finishes a move a crash interrupted after a sidecar copied to the archive was moved aside', async () => {
    const files = await writeMedia(root.path, ['c.jpg']);
    const sidecars = await writeMedia(root.path, ['c.jpg.xmp'], 100);
    const c = await confirmed('c.jpg', files.get('c.jpg') ?? Buffer.alloc(0));
    // The photo went, its sidecar was copied: the crash came after the sidecar's name went aside.
    await mkdir(root.archivePath, { recursive: true });
    await rename(c.path, join(root.archivePath, 'c.jpg'));
    await writeFile(join(root.archivePath, 'c.jpg.xmp'), sidecars.get('c.jpg.xmp') ?? Buffer.alloc(0));
    await rename(join(root.path, 'c.jpg.xmp'), join(root.path, '.c.jpg.xmp.iau-aside-0123456789ab'));
    expect(await finishInterrupted(c, 'archiving', record, fs)).toEqual({ mode: 'move', archivedTo: join(root.archivePath, 'c.jpg') });
    expect(await readdir(root.path), 'nothing left behind, hidden or not (the archive is in the same folder here)').toEqual(['archive']);
    expect(await readFile(join(root.archivePath, 'c.jpg.xmp'))).toEqual(sidecars.get('c.jpg.xmp'));
  });

  it('keeps a shared sidecar while another file of its stem is left, and removes it with the last', async () => {
    const files = await writeMedia(root.path, ['pair.heic', 'pair.mov']);
    await writeMedia(root.path, ['pair.xmp'], 100);

    await dispose('pair.heic', files, 'delete', 'pair.xmp');
    expect((await readdir(root.path)).sort()).toEqual(['pair.mov', 'pair.xmp']);
    await dispose('pair.mov', files, 'delete', 'pair.xmp');
    expect(await readdir(root.path)).toEqual([]);
    // Listed only because a shared sidecar was there to decide on.
    expect(listed).toEqual([root.path, root.path]);
  });

  it('deletes nothing when the original changed since its upload', async () => {
    const files = await writeMedia(root.path, ['d.jpg']);
    await writeMedia(root.path, ['d.jpg.xmp'], 100);
    const file = await confirmed('d.jpg', files.get('d.jpg') ?? Buffer.alloc(0), 'd.jpg.xmp');
    await writeFile(file.path, 'edited since the upload');

    await expect(disposeOriginal(file, 'delete', record, fs)).rejects.toBeInstanceOf(SourceChangedError);
    expect((await readdir(root.path)).sort()).toEqual(['d.jpg', 'd.jpg.xmp']);
    expect(recorded).toEqual([]);
  });
});

describe('move mode', () => {
  const move = async (name: string, files: Map<string, Buffer>, fsUsed: ArchiveFs = fs) =>
    disposeOriginal(await confirmed(name, files.get(name) ?? Buffer.alloc(0)), 'move', record, fsUsed);

  it("moves a photo's sidecars after it, named after its name in the archive", async () => {
    const files = await writeMedia(root.path, ['a.jpg', 'a.jpg.xmp', 'b.jpg', 'b.jpg.XMP', 'b.xmp', 'c.jpg']);
    // The archive already holds another b.jpg: this one becomes "b (1).jpg", and its sidecars follow that name.
    await writeMedia(root.archivePath, ['b.jpg']);
    for (const name of ['a.jpg', 'b.jpg', 'c.jpg']) await move(name, files);
    expect((await readdir(root.path)).filter((name) => name !== 'archive')).toEqual([]);
    const archived = new Map([
      ['a.jpg.xmp', 'a.jpg.xmp'],
      ['b (1).jpg.XMP', 'b.jpg.XMP'],
      ['b (1).xmp', 'b.xmp'],
    ]);
    for (const [inArchive, original] of archived) expect(await readFile(join(root.archivePath, inArchive)), inArchive).toEqual(files.get(original));
    expect((await readdir(root.archivePath)).sort()).toEqual(['a.jpg', 'a.jpg.xmp', 'b (1).jpg', 'b (1).jpg.XMP', 'b (1).xmp', 'b.jpg', 'c.jpg']);
  });

  it('moves a shared sidecar only with the last file of its stem', async () => {
    const files = await writeMedia(root.path, ['pair.heic', 'pair.mov', 'pair.xmp']);
    await move('pair.heic', files);
    expect(await readFile(join(root.path, 'pair.xmp'))).toEqual(files.get('pair.xmp'));
    await move('pair.mov', files);
    expect(await readFile(join(root.archivePath, 'pair.xmp'))).toEqual(files.get('pair.xmp'));
    expect((await readdir(root.path)).filter((name) => name !== 'archive')).toEqual([]);
  });

  it('leaves a sidecar that cannot be moved where it is, and says why; the photo is archived', async () => {
    const files = await writeMedia(root.path, ['d.jpg', 'd.jpg.xmp']);
    const failing: ArchiveFs = {
      ...fs,
      link: (from, to) => (from.endsWith('.xmp') ? Promise.reject(Object.assign(new Error('EIO: i/o error (test)'), { code: 'EIO' })) : fs.link(from, to)),
    };
    const disposition = await move('d.jpg', files, failing);
    expect(disposition).toMatchObject({ mode: 'move', archivedTo: join(root.archivePath, 'd.jpg') });
    expect(disposition.mode === 'move' && disposition.sidecarsLeft).toContain('d.jpg.xmp');
    expect(await readFile(join(root.path, 'd.jpg.xmp'))).toEqual(files.get('d.jpg.xmp'));
    expect(await readdir(root.archivePath)).toEqual(['d.jpg']);
    expect(recorded).toEqual(['archiving', 'archived']);
  });
});

describe('a folder that cannot be written to (a card with its lock switch on)', () => {
  it('leaves the original and its sidecar in place in move and delete modes, recorded as kept, with nothing in the archive', async () => {
    const files = await writeMedia(root.path, ['f.jpg', 'f.jpg.xmp']);
    const readOnly: ArchiveFs = {
      ...fs,
      writable: (folder) => Promise.reject(Object.assign(new Error(`EROFS: read-only file system, access '${folder}'`), { code: 'EROFS' })),
      rename: (from) => Promise.reject(Object.assign(new Error(`EROFS: read-only file system, rename '${from}'`), { code: 'EROFS' })),
    };
    for (const mode of ['move', 'delete'] as const) {
      recorded = [];
      const disposition = await disposeOriginal(await confirmed('f.jpg', files.get('f.jpg') ?? Buffer.alloc(0), 'f.jpg.xmp'), mode, record, readOnly);
      expect(disposition).toEqual({ mode: 'left', folder: root.path, problem: 'is on a read-only file system' });
      expect(recorded).toEqual([mode === 'move' ? 'archiving' : 'deleting', 'kept']);
      expect((await readdir(root.path)).filter((name) => name !== 'archive').sort()).toEqual(['f.jpg', 'f.jpg.xmp']);
      expect(await readdir(root.archivePath).catch(() => [])).toEqual([]);
    }
  });
});

describe('keep mode', () => {
  it('touches nothing and records the original as kept', async () => {
    const files = await writeMedia(root.path, ['e.jpg']);
    await writeMedia(root.path, ['e.jpg.xmp'], 100);
    await dispose('e.jpg', files, 'keep', 'e.jpg.xmp');
    expect((await readdir(root.path)).sort()).toEqual(['e.jpg', 'e.jpg.xmp']);
    expect(recorded).toEqual(['kept']);
  });
});
