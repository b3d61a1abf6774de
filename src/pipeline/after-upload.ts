import { basename, dirname, extname, join } from 'node:path';
import type { AfterUpload, WatchRoot } from '../config.js';
import {
  archiveFile,
  currentVersion,
  nodeArchiveFs,
  numberedName,
  removeIfExists,
  SourceChangedError,
  targetPath,
  type ArchiveFs,
} from './archive.js';
import { hashFile } from './hash.js';
import type { Recorder } from './states.js';
import { sameVersion, type FileVersion } from './types.js';

/** The original of a file the server has confirmed. */
export interface ConfirmedFile extends FileVersion {
  path: string;
  root: WatchRoot;
  checksum: string;
}

/** What became of the original. */
export type Disposition = { mode: 'move'; archivedTo: string } | { mode: 'delete' } | { mode: 'keep' };

/**
 * Does what AFTER_UPLOAD says with an original the server has confirmed, recording the intent
 * before the side effect (write-ahead), so that a crash between the two is finished on the
 * next start by {@link finishInterrupted}. Throws SourceChangedError when the file is no longer
 * the version that was uploaded: then nothing is touched and the file goes round again.
 */
export async function disposeOriginal(
  file: ConfirmedFile,
  mode: AfterUpload,
  record: Recorder,
  fs: ArchiveFs = nodeArchiveFs,
): Promise<Disposition> {
  switch (mode) {
    case 'move': {
      // Committed before the link: a crash after it is finished at the next start.
      await record(file, 'archiving', { archivePath: targetPath(file.path, file.root) });
      const archived = await archiveFile({ source: file.path, root: file.root, checksum: file.checksum, expected: file, fs });
      record(file, 'archived', { archivePath: archived.target });
      return { mode, archivedTo: archived.target };
    }
    case 'delete':
      await assertUnchanged(fs, file);
      await record(file, 'deleting');
      // Again, as the commit took a moment: a new file put at the path meanwhile stays.
      await assertUnchanged(fs, file);
      await deleteWithSidecars(fs, file.path);
      record(file, 'deleted');
      return { mode };
    case 'keep':
      await assertUnchanged(fs, file);
      record(file, 'kept');
      return { mode };
    default: {
      const unhandled: never = mode;
      throw new Error(`unknown AFTER_UPLOAD mode ${String(unhandled)}`);
    }
  }
}

/**
 * Finishes a move or deletion that a crash interrupted (the journal says `archiving` or
 * `deleting`). Returns what is true on disk now, or 'lost' when the original is gone and no
 * archived copy with its checksum exists (only possible if someone removed it by hand).
 */
export async function finishInterrupted(
  file: ConfirmedFile,
  state: 'archiving' | 'deleting',
  record: Recorder,
  fs: ArchiveFs = nodeArchiveFs,
): Promise<Disposition | 'lost'> {
  const present = await currentVersion(fs, file.path);
  const uploadedVersion = sameVersion(present, file);
  if (state === 'deleting') {
    // Only the version that was uploaded goes. Another file at its path now (a new picture under
    // the same name, while the uploader was down) was never uploaded: it stays, with its
    // sidecars, for the scan to find. Either way the uploaded version is gone from the folder.
    if (uploadedVersion) await deleteWithSidecars(fs, file.path);
    record(file, 'deleted');
    return { mode: 'delete' };
  }
  if (uploadedVersion) {
    // The link may already exist: archiveFile finds the identical copy and only removes the source.
    return disposeOriginal(file, 'move', record, fs);
  }
  if (present) throw new SourceChangedError(file.path, file, present);
  const copy = await findArchivedCopy(fs, file);
  if (!copy) return 'lost';
  record(file, 'archived', { archivePath: copy });
  return { mode: 'move', archivedTo: copy };
}

/** The archived copy of a file: its target name or a numbered variant with the same bytes. */
async function findArchivedCopy(fs: ArchiveFs, file: ConfirmedFile): Promise<string | undefined> {
  const wanted = targetPath(file.path, file.root);
  for (let n = 0; ; n++) {
    const candidate = numberedName(wanted, n);
    const found = await currentVersion(fs, candidate);
    // Names are claimed in order, so the copy is never past the first free name.
    if (!found) return undefined;
    if (found.size === file.size && (await hashFile(candidate)).checksum === file.checksum.toLowerCase()) return candidate;
  }
}

/** The spellings of a sidecar's extension looked for: what photo tools write. */
const SIDECAR_EXTENSIONS = ['.xmp', '.XMP'];

/**
 * Removes the original and its XMP sidecars: `photo.jpg.xmp` always, `photo.xmp` only when no
 * other file of that stem (the video of a live photo, say) still needs it. Sidecars are looked
 * for by name, not by listing the folder: a camera's folder holds thousands of files, and a
 * listing per deleted file made deleting a folder take time in the square of its size. The
 * folder is listed only when a `photo.xmp` exists, to see whether another file still needs it.
 */
async function deleteWithSidecars(fs: ArchiveFs, path: string): Promise<void> {
  await removeIfExists(fs, path);
  const folder = dirname(path);
  const name = basename(path);
  const stem = name.slice(0, name.length - extname(name).length);
  await Promise.all(SIDECAR_EXTENSIONS.map((ext) => removeIfExists(fs, `${path}${ext}`)));
  const shared: string[] = [];
  for (const ext of SIDECAR_EXTENSIONS) {
    const candidate = join(folder, `${stem}${ext}`);
    if ((await currentVersion(fs, candidate)) !== null) shared.push(candidate);
  }
  if (shared.length === 0) return;
  let siblings: string[];
  try {
    siblings = await fs.readdir(folder);
  } catch {
    return; // the folder went away with the file: nothing left beside it
  }
  const lower = (text: string): string => text.toLowerCase();
  const stillNeeded = siblings.some((sibling) => {
    const ext = extname(sibling);
    return lower(ext) !== '.xmp' && lower(sibling.slice(0, sibling.length - ext.length)) === lower(stem);
  });
  if (!stillNeeded) for (const sidecar of shared) await removeIfExists(fs, sidecar);
}

async function assertUnchanged(fs: ArchiveFs, file: ConfirmedFile): Promise<void> {
  const present = await currentVersion(fs, file.path);
  if (!sameVersion(present, file)) throw new SourceChangedError(file.path, file, present);
}
