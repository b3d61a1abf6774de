import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { lstat, mkdir, readdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { WatchRoot } from '../../src/config.js';
import { archiveFile, isArchiveTemporary, nodeArchiveFs, simulatedCrossDeviceFs, type ArchiveFs } from '../../src/pipeline/archive.js';
import { ArchiveTemporaries } from '../../src/pipeline/archive-temporaries.js';
import { makeTempDir } from '../helpers/temp-dir.js';

let dir: Awaited<ReturnType<typeof makeTempDir>>;
let root: WatchRoot;
let state: string;
let stamp: string;

beforeEach(async () => {
  dir = await makeTempDir('iau-temporaries-');
  root = { path: join(dir.path, 'watch'), archivePath: join(dir.path, 'archive') };
  state = join(dir.path, 'state');
  stamp = join(state, 'archive-clean.json');
  await mkdir(root.path);
  await mkdir(state);
});
afterEach(async () => {
  await dir.remove();
});

async function put(path: string, content: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, content);
}

const leftover = (): string => join(root.archivePath, 'sub', '.a.jpg.iau-tmp-0123456789ab');

/** Archives `name` from the watch folder through `fs`, as the pipeline does after an upload. */
async function archive(name: string, fs: ArchiveFs) {
  const source = join(root.path, name);
  await put(source, `bytes of ${name}`);
  const stats = await lstat(source);
  const checksum = createHash('sha1').update(`bytes of ${name}`).digest('hex');
  return archiveFile({ source, root, checksum, expected: { size: stats.size, mtimeMs: stats.mtimeMs }, fs });
}

async function temporariesIn(folder: string): Promise<string[]> {
  const entries = await readdir(folder, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((entry) => isArchiveTemporary(entry.name)).map((entry) => entry.name);
}

describe('ArchiveTemporaries', () => {
  it('walks an archive without a stamp, removes what a crash left, and stamps it', async () => {
    await put(leftover(), 'half a copy');
    const temporaries = new ArchiveTemporaries(state, root.archivePath);
    expect(await temporaries.removeLeftovers()).toBe(1);
    expect(existsSync(leftover())).toBe(false);
    expect(existsSync(stamp)).toBe(true);
  });

  it('trusts the stamp: the next start does not walk the archive', async () => {
    await new ArchiveTemporaries(state, root.archivePath).removeLeftovers();
    // Not ours to find: with the stamp in place, nothing looks.
    await put(leftover(), 'planted');
    expect(await new ArchiveTemporaries(state, root.archivePath).removeLeftovers()).toBeUndefined();
    expect(existsSync(leftover())).toBe(true);
  });

  it('walks when the stamp names another archive or cannot be read', async () => {
    await new ArchiveTemporaries(state, join(dir.path, 'old archive')).removeLeftovers();
    await put(leftover(), 'half a copy');
    expect(await new ArchiveTemporaries(state, root.archivePath).removeLeftovers()).toBe(1);

    await writeFile(stamp, '{"archive":');
    await put(leftover(), 'half a copy');
    expect(await new ArchiveTemporaries(state, root.archivePath).removeLeftovers()).toBe(1);
  });

  it('removes the stamp before a copy to another disk starts; a run that removed its temporaries stamps again', async () => {
    const temporaries = new ArchiveTemporaries(state, root.archivePath);
    await temporaries.removeLeftovers();
    const stampedDuringCopy: boolean[] = [];
    const spying: ArchiveFs = {
      ...nodeArchiveFs,
      copyFile: (source, destination, mode) => {
        stampedDuringCopy.push(existsSync(stamp));
        return nodeArchiveFs.copyFile(source, destination, mode);
      },
    };
    const fs = temporaries.track(simulatedCrossDeviceFs(spying));

    expect(await archive('a.jpg', fs)).toMatchObject({ outcome: 'moved', method: 'copy' });
    expect(await archive('b.jpg', fs)).toMatchObject({ outcome: 'moved', method: 'copy' });
    expect(stampedDuringCopy).toEqual([false, false]);
    expect(existsSync(stamp)).toBe(false);
    temporaries.finish();
    expect(existsSync(stamp)).toBe(true);
  });

  it('follows a temporary renamed into place (no hard links on the archive disk)', async () => {
    const temporaries = new ArchiveTemporaries(state, root.archivePath);
    const noLinks: ArchiveFs = { ...nodeArchiveFs, link: () => Promise.reject(Object.assign(new Error('EPERM'), { code: 'EPERM' })) };
    const fs = temporaries.track(simulatedCrossDeviceFs(noLinks));
    expect(await archive('a.jpg', fs)).toMatchObject({ outcome: 'moved', method: 'copy' });
    temporaries.finish();
    expect(existsSync(stamp)).toBe(true);
  });

  it('a temporary that could not be removed keeps the stamp away, and the next start removes it', async () => {
    const temporaries = new ArchiveTemporaries(state, root.archivePath);
    await temporaries.removeLeftovers();
    const stuck: ArchiveFs = {
      ...nodeArchiveFs,
      unlink: (path) =>
        isArchiveTemporary(path.split('/').pop() ?? '') ? Promise.reject(Object.assign(new Error('EIO'), { code: 'EIO' })) : nodeArchiveFs.unlink(path),
    };
    // Placed by a hard link from the temporary, whose removal then fails: the file is archived.
    expect(await archive('a.jpg', temporaries.track(simulatedCrossDeviceFs(stuck)))).toMatchObject({ outcome: 'moved', method: 'copy' });
    expect(await temporariesIn(root.archivePath)).toHaveLength(1);
    temporaries.finish();
    expect(existsSync(stamp)).toBe(false);

    expect(await new ArchiveTemporaries(state, root.archivePath).removeLeftovers()).toBe(1);
    expect(await temporariesIn(root.archivePath)).toEqual([]);
  });

  it('a state folder that cannot be synced does not stop copies; any other sync failure does', async () => {
    const failing = (code: string) => () => {
      throw Object.assign(new Error(code), { code });
    };
    // Some FUSE and network file systems refuse a folder's fsync: the removal is as durable as they make it.
    const unsupported = new ArchiveTemporaries(state, root.archivePath, failing('EINVAL'));
    await unsupported.removeLeftovers();
    expect(await archive('a.jpg', unsupported.track(simulatedCrossDeviceFs()))).toMatchObject({ outcome: 'moved', method: 'copy' });
    expect(existsSync(stamp)).toBe(false);

    // A real failure: the stamp's removal may not last, so no temporary may be made.
    const broken = new ArchiveTemporaries(state, root.archivePath, failing('EIO'));
    await broken.removeLeftovers();
    expect(existsSync(stamp)).toBe(true);
    await expect(archive('b.jpg', broken.track(simulatedCrossDeviceFs()))).rejects.toMatchObject({ step: 'copy' });
    expect(existsSync(join(root.path, 'b.jpg'))).toBe(true);
    expect(await temporariesIn(root.archivePath)).toEqual([]);
  });

  it('no copy starts when the stamp cannot be removed: the original stays', async () => {
    // A folder where the stamp should be: it can be neither read nor removed.
    await mkdir(stamp);
    const temporaries = new ArchiveTemporaries(state, root.archivePath);
    await temporaries.removeLeftovers();
    await expect(archive('a.jpg', temporaries.track(simulatedCrossDeviceFs()))).rejects.toMatchObject({ step: 'copy' });
    expect(existsSync(join(root.path, 'a.jpg'))).toBe(true);
    expect(await temporariesIn(root.archivePath)).toEqual([]);
  });
});
