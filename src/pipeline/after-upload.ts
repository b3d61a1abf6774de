import type { FileHandle } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import type { AfterUpload, WatchRoot } from '../config.js';
import { messageOf } from '../support/message.js';
import {
  archiveFile,
  currentVersion,
  nodeArchiveFs,
  numberedName,
  removeVerified,
  restoreAsides,
  SourceChangedError,
  SourceUnwritableError,
  targetPath,
  type ArchiveFs,
} from './archive.js';
import { hashFile } from './hash.js';
import type { Bytes, Disposed, KeptSidecar, LateWrites } from './late-writes.js';
import { isShared, sharesStem, sidecarFollowing, sidecarNames, stemOf, type SentSidecar } from './sidecar.js';
import type { RecordedFile, Recorder } from './states.js';
import { sameVersion, type FileIdentity, type FileVersion } from './types.js';

/** The original of a file the server has confirmed. */
export interface ConfirmedFile extends FileVersion {
  path: string;
  root: WatchRoot;
  checksum: string;
  /** The sidecar that went to the server with it: delete mode removes that version only. */
  sidecar?: SentSidecar;
  /** False when no sidecar was beside it when it was read: a move then does not look for one. */
  mayHaveSidecars?: boolean;
  /** The asset the server has of it, when known (for a warning about a late write). */
  assetId?: string;
  /** The file uploaded (SettledFile.identity): another file at its path is neither archived nor removed. */
  identity?: FileIdentity;
}

/**
 * What became of the original; `sidecarsLeft`: why a sidecar could not follow it into the
 * archive. `left`: it could not be moved or deleted, as its folder cannot be written to
 * (`problem`: "the folder ...").
 */
export type Disposition =
  | { mode: 'move'; archivedTo: string; sidecarsLeft?: string }
  | { mode: 'delete' }
  | { mode: 'keep' }
  | { mode: 'left'; folder: string; problem: string };

/** What became of the original, as the end of its log line: `, archived`. */
export function describeDisposition(disposition: Disposition): string {
  switch (disposition.mode) {
    case 'move':
      return ', archived';
    case 'delete':
      return ', original deleted';
    case 'keep':
      return ', original kept';
    case 'left':
      return `, left in place: its folder ${disposition.problem}`;
  }
}

/**
 * Does what AFTER_UPLOAD says with an original the server has confirmed, recording the intent
 * before the side effect (write-ahead), so that a crash between the two is finished on the
 * next start by {@link finishInterrupted}. Throws SourceChangedError when the file is no longer
 * the version that was uploaded: then nothing is touched and the file goes round again.
 *
 * `lateWrites` then watches the bytes the server got, for a writer that comes back: by the name
 * that still leads to them, or, where their last name goes, through a descriptor it holds open.
 */
export async function disposeOriginal(
  file: ConfirmedFile,
  mode: AfterUpload,
  record: Recorder,
  fs: ArchiveFs = nodeArchiveFs,
  lateWrites?: LateWrites,
): Promise<Disposition> {
  try {
    return await dispose(file, mode, record, fs, lateWrites);
  } catch (error) {
    if (!(error instanceof SourceUnwritableError)) throw error;
    // Kept as it is, as in keep mode, until its folder can be written to (Coordinator).
    record(file, 'kept', { reason: `left in place: ${error.message}` });
    return { mode: 'left', folder: dirname(file.path), problem: error.problem };
  }
}

async function dispose(file: ConfirmedFile, mode: AfterUpload, record: Recorder, fs: ArchiveFs, lateWrites?: LateWrites): Promise<Disposition> {
  switch (mode) {
    case 'move': {
      // Committed before the link: a crash after it is finished at the next start.
      await record(file, 'archiving', { archivePath: targetPath(file.path, file.root) });
      const held: { handle?: FileHandle } = {};
      try {
        const archived = await archiveFile({
          ...{ source: file.path, root: file.root, checksum: file.checksum, expected: file, fs, identity: file.identity },
          beforeOrphaning: lateWrites && (async (aside) => void (held.handle = await lateWrites.hold(aside, file))),
        });
        const sidecarsLeft = await archiveSidecars(file, archived.target, fs);
        record(file, 'archived', { archivePath: archived.target });
        // A link or a rename keeps the bytes under the archive's name.
        const bytes: Bytes | undefined = held.handle
          ? { kind: 'held', handle: held.handle }
          : archived.method === 'link' || archived.method === 'rename'
            ? { kind: 'named', path: archived.target }
            : undefined;
        if (bytes) lateWrites?.watch(disposed(file, mode, bytes, archived.target));
        delete held.handle;
        return { mode, archivedTo: archived.target, ...(sidecarsLeft ? { sidecarsLeft } : {}) };
      } finally {
        await held.handle?.close();
      }
    }
    case 'delete': {
      await assertUnchanged(fs, file);
      await record(file, 'deleting');
      // Again, as the commit took a moment: a new file put at the path meanwhile stays.
      await assertUnchanged(fs, file);
      const held: { handle?: FileHandle; sidecar?: KeptSidecar } = {};
      try {
        await deleteWithSidecar(fs, file, async (aside) => {
          held.handle = await lateWrites?.hold(aside, file);
          // What the sidecar sent with it holds goes back with a complete version, if one comes.
          if (held.handle && file.sidecar) held.sidecar = await lateWrites?.keepSidecar(file.sidecar);
        });
      } catch (error) {
        await held.handle?.close();
        lateWrites?.dropSidecar(held.sidecar);
        throw error;
      }
      const { handle } = held;
      let { sidecar } = held;
      record(file, 'deleted');
      // A shared sidecar that another file of the name still needs stays where it is.
      if (sidecar && (await currentVersion(fs, sidecar.path)) !== null) {
        lateWrites?.dropSidecar(sidecar);
        sidecar = undefined;
      }
      if (handle) lateWrites?.watch({ ...disposed(file, mode, { kind: 'held', handle }), ...(sidecar ? { sidecar } : {}) });
      return { mode };
    }
    case 'keep':
      await assertUnchanged(fs, file);
      record(file, 'kept');
      lateWrites?.watch(disposed(file, mode, { kind: 'named', path: file.path }));
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
  // A crash between moving a name aside and removing it left it there: the original's, or one of
  // its sidecars', which go after it.
  const { own, shared } = sidecarNames(file.path);
  await restoreAsides(fs, [file.path, ...own, ...shared]);
  const present = await currentVersion(fs, file.path);
  const uploadedVersion = sameVersion(present, file);
  if (state === 'deleting') {
    // Only the version that was uploaded goes. Another file at its path now (a new picture under
    // the same name, while the uploader was down) was never uploaded: it stays, with its
    // sidecars, for the scan to find. Either way the uploaded version is gone from the folder.
    // With nothing there, the crash may have come between the photo and its sidecar: the sidecar
    // sent goes too, if it is still that version (the server has what it holds).
    if (uploadedVersion || present === null) await deleteWithSidecar(fs, file);
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
  const sidecarsLeft = await archiveSidecars(file, copy, fs);
  record(file, 'archived', { archivePath: copy });
  return { mode: 'move', archivedTo: copy, ...(sidecarsLeft ? { sidecarsLeft } : {}) };
}

function disposed(file: ConfirmedFile, afterUpload: AfterUpload, bytes: Bytes, archivedTo?: string): Disposed {
  const { path, root, size, mtimeMs, assetId, checksum } = file;
  return { path, root, size, mtimeMs, assetId, checksum, afterUpload, bytes, ...(archivedTo === undefined ? {} : { archivedTo }) };
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

/**
 * Removes the original and the sidecar that went to the server with it, if that is still the
 * version sent. Any other sidecar stays, since what it holds is nowhere else: one written since,
 * or one that did not go (the server already had the photo, or it was too large). A shared
 * `photo.xmp` goes only once no other file of its stem (the video of a live photo, say) is left to
 * need it: the folder is listed only then, since a listing per deleted file made deleting a
 * camera's folder of thousands take time in the square of its size.
 */
async function deleteWithSidecar(fs: ArchiveFs, file: ConfirmedFile, beforeRemoving?: (aside: string) => Promise<void>): Promise<void> {
  const { path, sidecar } = file;
  const removal = await removeVerified(fs, path, file, { beforeRemoving, identity: file.identity, checksum: file.checksum });
  // A new file put at the path meanwhile stays (put back), with its sidecars, and goes round.
  if (removal.kind === 'other') throw new SourceChangedError(path, file, removal.version);
  if (!sidecar || !sameVersion(await currentVersion(fs, sidecar.path), sidecar)) return;
  if (isShared(path, sidecar.path) && (await stemStillNeeded(fs, path))) return;
  await removeVerified(fs, sidecar.path, sidecar);
}

/**
 * Moves the sidecars of an archived photo after it, named after its name in the archive:
 * `photo.jpg.xmp` becomes `<archived photo>.xmp`, and `photo.xmp` (only once no other file of
 * its stem is left) `<archived stem>.xmp`. A move loses nothing, so whatever version is there
 * goes, sent or not, the same careful way as the photo (never over another file; across disks
 * copied, verified, then removed). Never throws: a sidecar that cannot be moved stays where it is,
 * and the message returned says why.
 */
async function archiveSidecars(file: ConfirmedFile, archivedTo: string, fs: ArchiveFs): Promise<string | undefined> {
  if (file.mayHaveSidecars === false) return undefined;
  const { own, shared } = sidecarNames(file.path);
  // The folder is listed only when a shared sidecar is there to decide on.
  const sharedThere: string[] = [];
  for (const path of shared) if ((await currentVersion(fs, path)) !== null) sharedThere.push(path);
  const sidecars = sharedThere.length > 0 && !(await stemStillNeeded(fs, file.path)) ? [...own, ...sharedThere] : own;
  const problems: string[] = [];
  for (const path of sidecars) {
    try {
      const version = await currentVersion(fs, path);
      if (version !== null) await moveSidecar({ path, ...version }, file.root, file.path, archivedTo, fs);
    } catch (error) {
      const why = error instanceof SourceChangedError ? 'it changed while it was moved' : messageOf(error);
      problems.push(`${basename(path)}: ${why}`);
    }
  }
  return problems.length > 0 ? problems.join('; ') : undefined;
}

/**
 * Moves one version of a sidecar of `photo` into the archive, named after the photo's archived
 * name `archivedTo`; returns where it went. Throws SourceChangedError if it is not that version.
 */
export async function moveSidecar(sidecar: RecordedFile, root: WatchRoot, photo: string, archivedTo: string, fs: ArchiveFs): Promise<string> {
  const { checksum } = await hashFile(sidecar.path);
  const target = sidecarFollowing(sidecar.path, photo, archivedTo);
  return (await archiveFile({ source: sidecar.path, root, checksum, expected: sidecar, fs, target })).target;
}

/** Whether a file other than a sidecar with the stem of `path` (any case) is in its folder. */
async function stemStillNeeded(fs: ArchiveFs, path: string): Promise<boolean> {
  let siblings: string[];
  try {
    siblings = await fs.readdir(dirname(path));
  } catch {
    return true; // not known: the sidecar stays
  }
  const stem = stemOf(basename(path));
  return siblings.some((sibling) => sharesStem(sibling, stem));
}

async function assertUnchanged(fs: ArchiveFs, file: ConfirmedFile): Promise<void> {
  const present = await currentVersion(fs, file.path);
  if (!sameVersion(present, file)) throw new SourceChangedError(file.path, file, present);
}
