/**
 * Archive: moves an uploaded original out of the watch folder into the archive, keeping its
 * sub-folders, without ever overwriting, losing or half-moving a file.
 *
 * How a file is placed, in order of preference:
 * 1. `link(source, target)`, then `unlink(source)`. A hard link is exclusive (EEXIST if the
 *    target exists, so a race cannot overwrite) and atomic, and the content never moves. The
 *    source is looked at again just before the unlink (removeLinkedSource).
 * 2. Where hard links are not supported (EPERM/ENOTSUP on FAT, some FUSE and SMB mounts):
 *    `rename(source, target)` after checking the target does not exist. rename() replaces an
 *    existing target silently, so a file created under that name between our check and the
 *    rename would be overwritten; the window is a few microseconds, and only on such file systems.
 * 3. Across file systems link/rename fail with EXDEV, so we copy to a hidden temporary in the
 *    target folder, fsync it, compare its size and SHA-1 with what was uploaded, link (or 2.) it
 *    into place, fsync the folder and only then unlink the source. On any failure the temporary is
 *    removed and the source stays where it was.
 *
 * The archive's folders are created when a placement says they are missing, and files placed
 * into one folder at the same time share its fsync (FolderSyncs).
 *
 * A name that is taken by the same content (same size and SHA-1) means the file was archived
 * before (e.g. we were stopped between placing it and removing the source): the source is
 * removed. A name taken by other content is never touched: we try `name (1).jpg`, `name (2).jpg`...
 */
import { randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { basename, dirname, extname, join, relative } from 'node:path';
import type { WatchRoot } from '../config.js';
import { isAbortError } from '../support/clock.js';
import { messageOf } from '../support/message.js';
import { hashFile } from './hash.js';
import { sameFile, sameVersion, type FileIdentity, type FileVersion } from './types.js';
import { closeFd, fsyncFd, openFd } from '../support/fd.js';
import type { FsWorker } from '../support/fs-worker.js';
import { isAtOrInside, isInside } from '../support/paths.js';

/**
 * The file-system operations of moving (and deleting, after-upload.ts) an original; the real ones
 * by default, injectable in tests.
 */
export interface ArchiveFs {
  lstat(path: string): Promise<{ size: number; mtimeMs: number; atimeMs: number; ino: number; dev: number; isFile(): boolean }>;
  mkdir(path: string, options: { recursive: true }): Promise<unknown>;
  link(existingPath: string, newPath: string): Promise<void>;
  rename(oldPath: string, newPath: string): Promise<void>;
  unlink(path: string): Promise<void>;
  /** Called with COPYFILE_EXCL: it must fail with EEXIST rather than overwrite. */
  copyFile(source: string, destination: string, mode: number): Promise<void>;
  utimes(path: string, atimeMs: number, mtimeMs: number): Promise<void>;
  /** Opens a file or folder only to fsync it. */
  open(path: string, flags: string): Promise<{ sync(): Promise<void>; close(): Promise<void> }>;
  /** The names in a folder (delete mode lists one only to see who shares a sidecar). */
  readdir(path: string): Promise<string[]>;
  /** Rejects (EROFS, EACCES) unless names may be added to and removed from the folder. */
  writable(folder: string): Promise<void>;
}

/** The real node:fs/promises. */
export const nodeArchiveFs: ArchiveFs = {
  lstat: (path) => fsp.lstat(path),
  mkdir: (path, options) => fsp.mkdir(path, options),
  link: (existingPath, newPath) => fsp.link(existingPath, newPath),
  rename: (oldPath, newPath) => fsp.rename(oldPath, newPath),
  unlink: (path) => fsp.unlink(path),
  copyFile: (source, destination, mode) => fsp.copyFile(source, destination, mode),
  utimes: (path, atimeMs, mtimeMs) => fsp.utimes(path, atimeMs / 1000, mtimeMs / 1000),
  // Every archived file fsyncs its folder: the cheaper callback API (support/fd.ts).
  open: async (path, flags) => {
    const fd = await openFd(path, flags);
    return { sync: () => fsyncFd(fd), close: () => closeFd(fd) };
  },
  readdir: (path) => fsp.readdir(path),
  writable: (folder) => fsp.access(folder, fsConstants.W_OK),
};

/**
 * The real file system with the calls every archived file makes (lstat, link, rename, unlink) run on the
 * file-system thread, which costs the main thread a fraction of a thread-pool call.
 */
export function threadedArchiveFs(files: FsWorker, base: ArchiveFs = nodeArchiveFs): ArchiveFs {
  return {
    ...base,
    lstat: async (path) => {
      const stats = await files.lstat(path);
      return { ...stats, isFile: () => stats.isFile };
    },
    link: (existingPath, newPath) => files.link(existingPath, newPath),
    rename: (oldPath, newPath) => files.rename(oldPath, newPath),
    unlink: (path) => files.unlink(path),
  };
}

/**
 * The archive's file system, refusing to make the archive folder (`archiveDirectory`, made at
 * start) again. Gone while the uploader runs, it was on a disk taken away (unmounted, or a USB
 * disk that reset), and made again at its path it would be on the disk beneath: the originals
 * moved there would be hidden once the disk is mounted again, and could fill the system's disk
 * (a Raspberry Pi's SD card). The archive fails instead, and the files wait in the watch folder
 * for their next try.
 *
 * `diskGone` says why the archive's disk is known to be gone (the mount table no longer has it),
 * if it is: then nothing is put in the archive at all, which also covers a disk mounted at the
 * archive folder itself, whose empty folder stays when it goes.
 */
export function keepingArchiveDirectory(
  base: ArchiveFs,
  archiveDirectory: string,
  diskGone: () => string | undefined = () => undefined,
  device: () => number | undefined = () => undefined,
): ArchiveFs {
  const guard = async (target: string): Promise<void> => {
    if (!isAtOrInside(target, archiveDirectory)) return;
    const gone = diskGone();
    if (gone !== undefined) throw errnoError('ENODEV', gone);
    // Unmounted since the mount table was last read, the disk left the folder it was mounted at.
    const expected = device();
    if (expected === undefined) return;
    const found = await base.lstat(archiveDirectory).catch(() => undefined);
    if (found?.dev !== expected) {
      throw errnoError(
        'ENODEV',
        `the archive folder ${archiveDirectory} is no longer on its disk (unmounted?). Nothing is put on the disk beneath: ` +
          'the files wait in the watch folder until it is mounted again',
      );
    }
  };
  return {
    ...base,
    link: async (existingPath, newPath) => {
      await guard(newPath);
      return base.link(existingPath, newPath);
    },
    rename: async (oldPath, newPath) => {
      await guard(newPath);
      return base.rename(oldPath, newPath);
    },
    copyFile: async (source, destination, mode) => {
      await guard(destination);
      return base.copyFile(source, destination, mode);
    },
    mkdir: async (path, options) => {
      await guard(path);
      try {
        await base.lstat(archiveDirectory);
      } catch (error) {
        const code = codeOf(error);
        if (code !== 'ENOENT' && code !== 'ENOTDIR') throw error;
        throw errnoError(
          'ENOENT',
          `the archive folder ${archiveDirectory} is gone (its disk unmounted?). It is not made again, which would put ` +
            'the originals on the disk beneath: mount it again, and the files waiting are archived at their next try',
        );
      }
      return base.mkdir(path, options);
    },
  };
}

/**
 * The real file system, except that moving an original answers EXDEV, as if the archive were on
 * another disk; placing our own temporary copy still works. Lets the crash tests run the
 * cross-device path on a machine with one file system.
 */
export function simulatedCrossDeviceFs(base: ArchiveFs = nodeArchiveFs): ArchiveFs {
  // Within a folder (a name moved aside and back) is on one disk.
  const crossing = (from: string, to: string): boolean => !isArchiveTemporary(basename(from)) && dirname(from) !== dirname(to);
  const exdev = (from: string, to: string): Error => errnoError('EXDEV', `EXDEV: cross-device link not permitted, '${from}' -> '${to}'`);
  return {
    ...base,
    link: (from, to) => (crossing(from, to) ? Promise.reject(exdev(from, to)) : base.link(from, to)),
    rename: (from, to) => (crossing(from, to) ? Promise.reject(exdev(from, to)) : base.rename(from, to)),
  };
}

export interface ArchiveInput {
  /** Absolute path of the uploaded file, inside `root.path`. */
  source: string;
  /** The watch folder it came from; the target is `root.archivePath` + the path below `root.path`. */
  root: WatchRoot;
  /** SHA-1 (hex) of the content that was uploaded. */
  checksum: string;
  /** Size and mtime of the version that was uploaded; a source that differs is not moved. */
  expected: FileVersion;
  /** The file that was uploaded, where known (SettledFile.identity): another file at the source path is not moved. */
  identity?: FileIdentity | undefined;
  /** Default: the real file system. */
  fs?: ArchiveFs;
  /** Stops the work before anything is placed (hashing an existing target can take a while). */
  signal?: AbortSignal;
  /**
   * The name wanted, if not the source's own place in the archive: a sidecar takes its photo's,
   * and a file written to after it went is put back at its place in the watch folder (late-writes.ts).
   */
  target?: string;
  /**
   * Called just before the source's name goes where no other name keeps its bytes (they were
   * copied across disks, or the archive had them already), with the name they have then (moved
   * aside: {@link removeVerified}): late-writes.ts holds them open.
   */
  beforeOrphaning?: (path: string) => Promise<void>;
}

export interface ArchiveResult {
  /**
   * `moved`: the file is now at `target` and no longer at the source.
   * `already-archived`: `target` already held the same content; the source was removed.
   */
  outcome: 'moved' | 'already-archived';
  /** Where the file is in the archive (may be a `name (n).ext` variant). */
  target: string;
  /** How it got there; `none` for already-archived. For logs. */
  method: 'link' | 'rename' | 'copy' | 'none';
}

/** The step of an archive that failed, for logs and for deciding what to tell the user. */
export type ArchiveStep =
  | 'resolve-target'
  | 'create-folder'
  | 'inspect-target'
  | 'move'
  | 'copy'
  | 'fsync'
  | 'verify'
  | 'place'
  | 'remove-source'
  | 'find-name';

/**
 * Archiving failed. Unless `target` is set, nothing changed: the source is where it was and no
 * temporary is left. With `target` set the file was archived there but the source could not be
 * removed; a retry finds the identical target and removes the source then.
 */
export class ArchiveError extends Error {
  override readonly name = 'ArchiveError';
  /** Set when the file was archived here but the source could not be removed afterwards. */
  readonly target: string | undefined;
  constructor(
    readonly step: ArchiveStep,
    /** The path (or `from -> to`) the failed operation worked on. */
    readonly path: string,
    /** The errno code (ENOSPC, EACCES, ...) when the failure came from the file system. */
    readonly code: string | undefined,
    message: string,
    options?: { cause?: unknown; target?: string },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.target = options?.target;
  }
}

/**
 * The source is not the version that was uploaded (it was modified, replaced or removed since).
 * Nothing was moved; the caller sends the file round the pipeline again.
 */
export class SourceChangedError extends Error {
  override readonly name = 'SourceChangedError';
  constructor(
    readonly path: string,
    readonly expected: FileVersion,
    /** What is there now; null when it is gone or no longer a regular file. */
    readonly actual: FileVersion | null,
  ) {
    super(
      actual === null
        ? `${path} is gone or no longer a regular file; it was not archived`
        : `${path} changed since it was uploaded (size ${expected.size} -> ${actual.size}, ` +
            `mtime ${expected.mtimeMs} -> ${actual.mtimeMs}); it was not archived`,
    );
  }
}

/**
 * The original's folder does not let its name be removed: a read-only file system (a card with
 * its lock switch on, a read-only mount) or no permission to write to it. That lasts until
 * someone changes it, so the file is not tried again on a timer: it stays where it is, and
 * nothing of it is left in the archive.
 */
export class SourceUnwritableError extends Error {
  override readonly name = 'SourceUnwritableError';
  /** What is wrong with the folder, as the end of "the folder ...". */
  readonly problem: string;
  constructor(
    readonly path: string,
    readonly code: string,
  ) {
    const problem = code === 'EROFS' ? 'is on a read-only file system' : 'cannot be written to by this user (permission denied)';
    super(`${dirname(path)} ${problem}`);
    this.problem = problem;
  }
}

/** Errors of moving a name aside in its own folder that mean the folder cannot be written to. */
const UNWRITABLE = new Set(['EROFS', 'EACCES', 'EPERM']);

/** Temporaries of an interrupted cross-device copy: `.<name>.iau-tmp-<12 hex>`. */
const TEMPORARY_PATTERN = /^\.(.*)\.iau-tmp-[0-9a-f]{12}$/;
/** How many `name (n)` variants we try before giving up (a sign of something badly wrong). */
const MAX_NAME_ATTEMPTS = 10_000;
/** The longest file name, in bytes, that Linux file systems take (ext4, btrfs, XFS, ZFS). */
const MAX_NAME_BYTES = 255;
/** The temporary adds a dot and 21 bytes of suffix to at most this much of the name. */
const MAX_TEMPORARY_STEM_BYTES = 200;
/** link() errors meaning "this file system has no hard links": fall back to rename. */
const LINK_UNSUPPORTED = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS']);
/** Errors of a folder's fsync meaning "this platform or file system cannot": nothing better exists there. */
const FOLDER_FSYNC_UNSUPPORTED = new Set(['EINVAL', 'EISDIR', 'ENOTSUP', 'EOPNOTSUPP', 'EPERM', 'EBADF']);

/** Whether a folder's fsync failed only because the platform or file system cannot do it. */
export function folderFsyncUnsupported(error: unknown): boolean {
  return FOLDER_FSYNC_UNSUPPORTED.has(codeOf(error) ?? '');
}

/** Moves an uploaded file into the archive; see the module comment for how. */
export async function archiveFile(input: ArchiveInput): Promise<ArchiveResult> {
  const fs = input.fs ?? nodeArchiveFs;
  const { source, checksum, expected, signal } = input;
  const wanted = input.target ?? targetPath(source, input.root);
  const folder = dirname(wanted);

  // No look at the source first: a hard link is checked before the source's name goes
  // (removeLinkedSource), and the other ways of placing a file check before they move anything.
  const job: Job = {
    fs,
    source,
    expected,
    identity: input.identity,
    checksum: checksum.toLowerCase(),
    signal,
    canLink: true,
    beforeOrphaning: input.beforeOrphaning,
  };
  let claim: Claim;
  try {
    claim = await claimName(job, source, wanted, 0);
  } catch (error) {
    if (codeOf(error) === 'EXDEV') return await copyAcross(job, wanted);
    // ENOENT with the archive folder in place: the source is gone.
    if (codeOf(error) === 'ENOENT') await assertUnchanged(job, source);
    // Refused: by the archive's folder (it fails, and is tried again), or by the source's.
    if (UNWRITABLE.has(codeOf(error) ?? '')) await assertSourceWritable(fs, source);
    throw wrap(error, 'move', `${source} -> ${wanted}`);
  }

  if (claim.kind === 'identical') {
    await assertUnchanged(job, source);
    await removeSource(job, claim.target, true);
    return { outcome: 'already-archived', target: claim.target, method: 'none' };
  }
  await syncFolder(fs, folder, claim.target);
  if (claim.method === 'link') await removeLinkedSource(job, claim.target);
  return { outcome: 'moved', target: claim.target, method: claim.method };
}

/**
 * The last step of a move by hard link: the source's name goes once the archive's is durable,
 * if it still leads to the file linked (the folder's fsync takes a while):
 * - the uploaded version: its name is removed;
 * - written to since it was uploaded (before the link or since), one file under two names: the
 *   archive takes its name back, the source keeps the bytes, and the file goes round again;
 * - anything else (a new file put at the source path, by a sync tool's rename say, or nothing):
 *   it stays, since it was never uploaded, and the archive keeps what its name holds.
 */
async function removeLinkedSource(job: Job, target: string): Promise<void> {
  const linked = await attempt('inspect-target', target, () => job.fs.lstat(target));
  if (!(await isUploadedFile(linked, target, job))) {
    // Another file was at the source path when it was linked: it was never uploaded. The
    // archive's new name goes, and the file goes round.
    await attempt('place', target, () => job.fs.unlink(target));
    throw new SourceChangedError(job.source, job.expected, await versionOf(job.fs, job.source));
  }
  await finishMove(job, target, { ino: linked.ino, dev: linked.dev }, false);
}

/**
 * Removes the source's name once the archive holds `identity` (the file linked, or the file the
 * copy was made of) under `target`. Written to since, the archive's name goes and the file goes
 * round; another file at the source path stays, and the archive keeps what its name holds.
 */
async function finishMove(job: Job, target: string, identity: FileIdentity, orphans: boolean): Promise<void> {
  let removal: Removal;
  try {
    removal = await removeVerified(job.fs, job.source, job.expected, {
      identity,
      checksum: job.checksum,
      ...(orphans ? { beforeRemoving: job.beforeOrphaning } : {}),
    });
  } catch (error) {
    // The original stays: the archive's name, made by this move, goes, so that the archive holds
    // no second copy of a file that is still in the watch folder (nor, linked, the same file).
    if (error instanceof SourceUnwritableError) await attempt('place', target, () => job.fs.unlink(target));
    throw wrap(error, 'remove-source', job.source, target);
  }
  if (removal.kind === 'other' && removal.sameFile) {
    await attempt('place', target, () => job.fs.unlink(target));
    throw new SourceChangedError(job.source, job.expected, removal.version);
  }
}

/**
 * Removes temporaries left by a cross-device copy that was interrupted (crash, power loss) from
 * the archive and its sub-folders. Call it at start, before archiving anything. Returns how many
 * were removed; a missing archive folder counts as none.
 */
export async function removeStaleTemporaries(archiveDirectory: string): Promise<number> {
  let removed = 0;
  const folders = [archiveDirectory];
  for (let folder = folders.pop(); folder !== undefined; folder = folders.pop()) {
    let entries;
    try {
      entries = await fsp.readdir(folder, { withFileTypes: true });
    } catch (error) {
      // The archive (or a sub-folder) was never created, or was removed while we walked it.
      if (codeOf(error) === 'ENOENT' || codeOf(error) === 'ENOTDIR') continue;
      throw error;
    }
    for (const entry of entries) {
      const path = join(folder, entry.name);
      // Dirent types come from lstat semantics: links to folders are not followed.
      if (entry.isDirectory()) folders.push(path);
      else if (entry.isFile() && TEMPORARY_PATTERN.test(entry.name)) {
        await removeIfExists(nodeArchiveFs, path);
        removed++;
      }
    }
  }
  return removed;
}

/** Whether a file name is one of our temporaries (the watcher and rescans should ignore them). */
export function isArchiveTemporary(name: string): boolean {
  return TEMPORARY_PATTERN.test(name);
}

/** Where a source goes: the archive folder of its root plus its path below the root. */
export function targetPath(source: string, root: WatchRoot): string {
  if (!isInside(source, root.path)) {
    throw new ArchiveError(
      'resolve-target',
      source,
      undefined,
      `cannot archive ${source}: it is not inside its watch folder ${root.path}`,
    );
  }
  return join(root.archivePath, relative(root.path, source));
}

/**
 * `photo.jpg`, `photo (1).jpg`, `photo (2).jpg`, ... A name near the file systems' limit of 255
 * bytes loses the end of its stem to make room for the number, and for the `.xmp` of a sidecar
 * that follows it (`photo (1).jpg.xmp`).
 */
export function numberedName(path: string, n: number): string {
  if (n === 0) return path;
  const name = basename(path);
  const extension = extname(name);
  const suffix = ` (${n})${extension}`;
  const stem = shortenedTo(name.slice(0, name.length - extension.length), MAX_NAME_BYTES - '.xmp'.length - Buffer.byteLength(suffix));
  return join(dirname(path), `${stem}${suffix}`);
}

/** `text` without as many characters at its end as it takes to fit in `bytes` bytes of UTF-8. */
function shortenedTo(text: string, bytes: number): string {
  if (Buffer.byteLength(text) <= bytes) return text;
  const characters = Array.from(text);
  while (characters.length > 0 && Buffer.byteLength(characters.join('')) > bytes) characters.pop();
  return characters.join('');
}

interface Job {
  fs: ArchiveFs;
  source: string;
  expected: FileVersion;
  identity: FileIdentity | undefined;
  checksum: string;
  signal: AbortSignal | undefined;
  /** Cleared the first time link() says the file system has no hard links. */
  canLink: boolean;
  beforeOrphaning: ((path: string) => Promise<void>) | undefined;
}

type Claim =
  | { kind: 'placed'; target: string; method: 'link' | 'rename' }
  | { kind: 'identical'; target: string };

/**
 * Places `from` under the first free `wanted (n)` name from `start` on, or finds a name that
 * already holds the same content. Errors other than EEXIST (EXDEV included) are thrown raw so the
 * caller can decide.
 */
async function claimName(job: Job, from: string, wanted: string, start: number): Promise<Claim> {
  let n = start;
  for (let attempts = 0; attempts < MAX_NAME_ATTEMPTS; attempts++) {
    const target = numberedName(wanted, n);
    try {
      const method = await placeExclusive(job, from, target);
      return { kind: 'placed', target, method };
    } catch (error) {
      if (codeOf(error) !== 'EEXIST') throw error;
    }
    const found = await inspect(job, target);
    if (found === 'identical') return { kind: 'identical', target };
    // 'absent': it vanished between our attempt and the look; try the same name again.
    if (found === 'different') n++;
  }
  throw new ArchiveError('find-name', wanted, undefined, `no free name for ${wanted} after ${MAX_NAME_ATTEMPTS} attempts`);
}

/**
 * Puts `from` at `to` unless `to` exists (then EEXIST). The archive folder is created when the
 * first attempt says it is missing: one failed call per new folder instead of a mkdir per file.
 */
async function placeExclusive(job: Job, from: string, to: string): Promise<'link' | 'rename'> {
  try {
    return await placeOnce(job, from, to);
  } catch (error) {
    // ENOENT names the source or the target's folder; a missing source is the caller's to report.
    if (codeOf(error) !== 'ENOENT' || (await versionOrNull(job.fs, from)) === 'absent') throw error;
  }
  const folder = dirname(to);
  await attempt('create-folder', folder, () => job.fs.mkdir(folder, { recursive: true }));
  return placeOnce(job, from, to);
}

async function placeOnce(job: Job, from: string, to: string): Promise<'link' | 'rename'> {
  if (job.canLink) {
    try {
      await job.fs.link(from, to);
      return 'link';
    } catch (error) {
      if (!LINK_UNSUPPORTED.has(codeOf(error) ?? '')) throw error;
      job.canLink = false;
    }
  }
  // No hard links here. rename() moves whatever is at `from` now, so the source must be the
  // uploaded version; and it would replace an existing file, so look first: something created
  // at `to` in the moment between the look and the rename would be overwritten (module comment).
  if (from === job.source) await assertUnchanged(job, from);
  if ((await versionOrNull(job.fs, to)) !== 'absent') throw errnoError('EEXIST', `file exists: ${to}`);
  await job.fs.rename(from, to);
  return 'rename';
}

/** What is at a name we could not take: the same content as ours, other content, or nothing now. */
async function inspect(job: Job, target: string): Promise<'identical' | 'different' | 'absent'> {
  const found = await attempt('inspect-target', target, () => versionOrNull(job.fs, target));
  if (found === 'absent') return 'absent';
  if (found === 'not-a-file' || found.size !== job.expected.size) return 'different';
  const { checksum } = await attempt('inspect-target', target, () => hashFile(target, job.signal));
  return checksum === job.checksum ? 'identical' : 'different';
}

/**
 * The cross-device path: copy, fsync, verify, place without overwriting, fsync the folder, remove
 * the source. The source is untouched until the verified copy is in place.
 */
async function copyAcross(job: Job, wanted: string): Promise<ArchiveResult> {
  const { fs, source } = job;
  const folder = dirname(wanted);
  await assertUnchanged(job, source);
  // A copy whose original cannot be removed would be taken back: not worth a card's gigabytes.
  await assertSourceWritable(fs, source);
  await attempt('create-folder', folder, () => fs.mkdir(folder, { recursive: true }));

  // Look for the same content under the names first: no point copying gigabytes to find out.
  let start = 0;
  for (;; start++) {
    if (start >= MAX_NAME_ATTEMPTS) {
      throw new ArchiveError('find-name', wanted, undefined, `no free name for ${wanted} after ${MAX_NAME_ATTEMPTS} attempts`);
    }
    const name = numberedName(wanted, start);
    const found = await inspect(job, name);
    if (found === 'identical') {
      await removeSource(job, name, true);
      return { outcome: 'already-archived', target: name, method: 'none' };
    }
    if (found === 'absent') break;
  }

  const temporary = join(folder, temporaryName(basename(wanted)));
  let claim: Claim;
  let copied: FileIdentity;
  try {
    await attempt('copy', `${source} -> ${temporary}`, () => fs.copyFile(source, temporary, fsConstants.COPYFILE_EXCL));
    const sourceStat = await attempt('copy', source, () => fs.lstat(source));
    // The copy is checked against what was uploaded below (verifyCopy), whatever file it was made of.
    copied = { ino: sourceStat.ino, dev: sourceStat.dev };
    // Keep the original's times: the archive is where people look for their originals. Best
    // effort: some file systems refuse to set times, and that must not stop the file being archived.
    await fs.utimes(temporary, sourceStat.atimeMs, sourceStat.mtimeMs).catch(() => undefined);
    await attempt('fsync', temporary, () => syncPath(fs, temporary));
    await verifyCopy(job, temporary);
    claim = await claimName(job, temporary, wanted, start).catch((error: unknown) => {
      throw wrap(error, 'place', `${temporary} -> ${wanted}`);
    });
  } catch (error) {
    await removeIfExists(fs, temporary).catch(() => {
      // Left behind: removeStaleTemporaries() clears it at the next start. The original error
      // is the one that matters to the caller.
    });
    throw wrap(error, 'copy', `${source} -> ${temporary}`);
  }

  if (claim.kind === 'identical') {
    // Someone placed the same content under this name while we copied.
    await removeIfExists(fs, temporary).catch(() => undefined);
    await removeSource(job, claim.target, true);
    return { outcome: 'already-archived', target: claim.target, method: 'none' };
  }
  if (claim.method === 'link') {
    // The temporary is a second name for the placed file; if it cannot be removed it is harmless
    // and removeStaleTemporaries() clears it at the next start.
    await removeIfExists(fs, temporary).catch(() => undefined);
  }
  await syncFolder(fs, folder, claim.target);

  // The copy took time; if the source was written to meanwhile, deleting it would lose those
  // writes: our copy comes back out, and the new version goes round.
  await finishMove(job, claim.target, copied, true);
  return { outcome: 'moved', target: claim.target, method: 'copy' };
}

/** Throws SourceUnwritableError if the source's folder says it cannot be written to; any other answer passes. */
async function assertSourceWritable(fs: ArchiveFs, source: string): Promise<void> {
  await fs.writable(dirname(source)).catch((error: unknown) => {
    const code = codeOf(error) ?? '';
    if (UNWRITABLE.has(code)) throw new SourceUnwritableError(source, code);
  });
}

/** The copy must be byte-for-byte what was uploaded: same size and SHA-1. */
async function verifyCopy(job: Job, temporary: string): Promise<void> {
  const copied = await attempt('verify', temporary, () => hashFile(temporary, job.signal));
  if (copied.size === job.expected.size && copied.checksum === job.checksum) return;
  // A mismatch is usually the source changing under the copy, or another file put in its place:
  // say so if it did.
  await assertUnchanged(job, job.source);
  throw new ArchiveError(
    'verify',
    temporary,
    undefined,
    `the copy ${temporary} of ${job.source} does not match what was uploaded ` +
      `(size ${copied.size}, sha1 ${copied.checksum}; expected size ${job.expected.size}, sha1 ${job.checksum})`,
  );
}

/**
 * The source's name goes, if it still leads to the uploaded version; a file put at the source
 * path meanwhile stays, and goes round (SourceChangedError). `orphans`: no other name keeps the
 * source's bytes (the target is a copy).
 */
async function removeSource(job: Job, target: string, orphans: boolean): Promise<void> {
  let removal: Removal;
  try {
    removal = await removeVerified(job.fs, job.source, job.expected, {
      identity: job.identity,
      checksum: job.checksum,
      ...(orphans ? { beforeRemoving: job.beforeOrphaning } : {}),
    });
  } catch (error) {
    throw wrap(error, 'remove-source', job.source, target);
  }
  if (removal.kind === 'other') throw new SourceChangedError(job.source, job.expected, removal.version);
}

/** What {@link removeVerified} did. */
export type Removal =
  | { kind: 'removed' }
  /** Nothing was at the path. */
  | { kind: 'gone' }
  /**
   * Another version was there (null: not a regular file), or another file than `identity`: it
   * was put back, at its path or, taken meanwhile, at a numbered name beside it. `sameFile`: it is
   * the file `identity` names (or no identity was given), written to since.
   */
  | { kind: 'other'; version: FileVersion | null; sameFile: boolean };

/**
 * Removes the name `path` only if it leads to `expected` (and, with `identity`, to that very
 * file: the one the archive linked or copied). A check then an unlink by path would remove
 * whatever is there by then: a sync tool renaming a new version over the original in between
 * would have that version deleted, never uploaded. So the name is first moved aside, in one
 * rename, to a hidden name of the same folder ({@link asideName}); what is looked at there is what
 * goes, and anything else is put back, never over a file (a numbered name then). A crash in
 * between leaves the aside, which {@link restoreAsides} puts back at the next start.
 * `beforeRemoving` gets the aside's path, just before the unlink.
 */
export async function removeVerified(
  fs: ArchiveFs,
  path: string,
  expected: FileVersion,
  options: {
    identity?: FileIdentity | undefined;
    /** With `identity`: another inode with these bytes is the same file, renumbered (see isUploadedFile). */
    checksum?: string | undefined;
    beforeRemoving?: ((aside: string) => Promise<void>) | undefined;
  } = {},
): Promise<Removal> {
  const aside = join(dirname(path), asideName(basename(path)));
  try {
    await fs.rename(path, aside);
  } catch (error) {
    const code = codeOf(error) ?? '';
    if (code === 'ENOENT') return { kind: 'gone' };
    if (UNWRITABLE.has(code)) throw new SourceUnwritableError(path, code);
    throw error;
  }
  const found = await fs.lstat(aside);
  const version = found.isFile() ? { size: found.size, mtimeMs: found.mtimeMs } : null;
  const { identity } = options;
  // The bytes are looked at only for the version expected: another one goes round anyway.
  const isSameFile = sameVersion(version, expected)
    ? await isUploadedFile(found, aside, { identity, checksum: options.checksum })
    : identity === undefined || sameFile(identity, found);
  if (isSameFile && sameVersion(version, expected)) {
    try {
      await options.beforeRemoving?.(aside);
      await removeIfExists(fs, aside);
    } catch (error) {
      // Not left hidden: back where it was, for the next try.
      await putBack(fs, aside, path).catch(() => undefined);
      throw error;
    }
    return { kind: 'removed' };
  }
  await putBack(fs, aside, path);
  return { kind: 'other', version, sameFile: isSameFile };
}

/** Puts a file moved aside back at `path`, or at the first free numbered name; returns where. */
async function putBack(fs: ArchiveFs, aside: string, path: string): Promise<string> {
  for (let n = 0; n < MAX_NAME_ATTEMPTS; n++) {
    const name = numberedName(path, n);
    try {
      await fs.link(aside, name);
    } catch (error) {
      if (codeOf(error) === 'EEXIST') continue;
      if (!LINK_UNSUPPORTED.has(codeOf(error) ?? '')) throw error;
      // No hard links here: a rename, after a look (a file made in the moment between is overwritten).
      if ((await versionOrNull(fs, name)) !== 'absent') continue;
      await fs.rename(aside, name);
      return name;
    }
    await removeIfExists(fs, aside);
    return name;
  }
  throw new ArchiveError('find-name', path, undefined, `no free name to put ${aside} back at ${path}`);
}

/** `.<name>.iau-aside-<12 hex>`: where {@link removeVerified} moves a name before it goes. */
function asideName(name: string): string {
  return `.${shortenedTo(name, MAX_TEMPORARY_STEM_BYTES)}${ASIDE_MARK}${randomBytes(6).toString('hex')}`;
}

const ASIDE_MARK = '.iau-aside-';

/**
 * Puts back what a crash left moved aside from `paths` (names of one folder) by
 * {@link removeVerified} (at most a few files, found by listing the folder once), so that
 * whatever finishes their removal looks at them again. Returns where each went.
 */
export async function restoreAsides(fs: ArchiveFs, paths: readonly string[]): Promise<string[]> {
  const [first] = paths;
  if (first === undefined) return [];
  const folder = dirname(first);
  let names: string[];
  try {
    names = await fs.readdir(folder);
  } catch (error) {
    if (codeOf(error) === 'ENOENT' || codeOf(error) === 'ENOTDIR') return [];
    throw error;
  }
  const restored: string[] = [];
  // Names long enough to be shortened may share a prefix: each aside is put back once.
  const handled = new Set<string>();
  for (const path of paths) {
    const prefix = `.${shortenedTo(basename(path), MAX_TEMPORARY_STEM_BYTES)}${ASIDE_MARK}`;
    for (const name of names) {
      if (handled.has(name) || !name.startsWith(prefix) || !/^[0-9a-f]{12}$/.test(name.slice(prefix.length))) continue;
      handled.add(name);
      restored.push(await putBack(fs, join(folder, name), path));
    }
  }
  return restored;
}

/**
 * Whether the file found (by `path`) is the one uploaded: the same inode, or, where the inode
 * differs, the same bytes. FAT and exFAT (a camera's card) and CIFS with `noserverino` number an
 * inode anew each time the kernel loads it, so an unchanged file may come back under another
 * number; another file renamed over it has other bytes. The hash is paid only then.
 */
async function isUploadedFile(
  found: FileIdentity,
  path: string,
  uploaded: { identity: FileIdentity | undefined; checksum: string | undefined; signal?: AbortSignal | undefined },
): Promise<boolean> {
  if (uploaded.identity === undefined || sameFile(found, uploaded.identity)) return true;
  if (uploaded.checksum === undefined) return false;
  const { checksum } = await attempt('inspect-target', path, () => hashFile(path, uploaded.signal));
  return checksum === uploaded.checksum.toLowerCase();
}

/** Throws SourceChangedError unless `source` is the job's version (and file, where known). */
async function assertUnchanged(job: Job, source: string): Promise<void> {
  const found = await attempt('inspect-target', source, async () => {
    try {
      return await job.fs.lstat(source);
    } catch (error) {
      if (codeOf(error) === 'ENOENT') return null;
      throw error;
    }
  });
  const actual = found?.isFile() ? { size: found.size, mtimeMs: found.mtimeMs } : null;
  if (!sameVersion(actual, job.expected) || (found !== null && !(await isUploadedFile(found, source, job)))) {
    throw new SourceChangedError(source, job.expected, actual);
  }
}

/** Size and mtime of a regular file; null when it is gone or not a regular file. */
export async function currentVersion(fs: ArchiveFs, path: string): Promise<FileVersion | null> {
  const found = await versionOrNull(fs, path);
  return found === 'absent' || found === 'not-a-file' ? null : found;
}

/** {@link currentVersion}, with a failure reported as the archive's `inspect-target` step. */
function versionOf(fs: ArchiveFs, path: string): Promise<FileVersion | null> {
  return attempt('inspect-target', path, () => currentVersion(fs, path));
}

async function versionOrNull(fs: ArchiveFs, path: string): Promise<FileVersion | 'absent' | 'not-a-file'> {
  try {
    const stats = await fs.lstat(path);
    return stats.isFile() ? { size: stats.size, mtimeMs: stats.mtimeMs } : 'not-a-file';
  } catch (error) {
    if (codeOf(error) === 'ENOENT') return 'absent';
    throw error;
  }
}

/**
 * Makes a new name in a folder survive a crash. Some file systems cannot fsync a folder (EINVAL,
 * EISDIR, ENOTSUP, EPERM on some network and FUSE mounts); there we carry on, as other tools do.
 */
async function syncFolder(fs: ArchiveFs, folder: string, target: string): Promise<void> {
  try {
    await folderSyncsOf(fs).sync(folder);
  } catch (error) {
    if (folderFsyncUnsupported(error)) return;
    throw wrap(error, 'fsync', folder, target);
  }
}

/**
 * Folder fsyncs shared between files: one fsync makes every name placed in the folder before it
 * started durable, so files archived into one folder at the same time share one instead of
 * queueing one each. A request that arrives while an fsync runs (which may have started before
 * its link) waits for the next one, which all such requests share.
 */
class FolderSyncs {
  readonly #running = new Map<string, { done: Promise<void>; next?: Promise<void> }>();

  constructor(private readonly fs: ArchiveFs) {}

  sync(folder: string): Promise<void> {
    const running = this.#running.get(folder);
    if (!running) return this.#start(folder);
    const start = (): Promise<void> => this.#start(folder);
    running.next ??= running.done.then(start, start);
    return running.next;
  }

  #start(folder: string): Promise<void> {
    const entry: { done: Promise<void>; next?: Promise<void> } = { done: Promise.resolve() };
    entry.done = syncPath(this.fs, folder).finally(() => {
      if (this.#running.get(folder) === entry) this.#running.delete(folder);
    });
    this.#running.set(folder, entry);
    return entry.done;
  }
}

/** One FolderSyncs per file-system implementation (the real one, or a test's). */
const folderSyncs = new WeakMap<ArchiveFs, FolderSyncs>();

function folderSyncsOf(fs: ArchiveFs): FolderSyncs {
  let syncs = folderSyncs.get(fs);
  if (!syncs) folderSyncs.set(fs, (syncs = new FolderSyncs(fs)));
  return syncs;
}

/** Makes a file's content (or a folder's names) durable: open, fsync, close. */
export async function syncPath(fs: ArchiveFs, path: string): Promise<void> {
  const handle = await fs.open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Removes a file; one that is already gone is fine. */
export async function removeIfExists(fs: Pick<ArchiveFs, 'unlink'>, path: string): Promise<void> {
  try {
    await fs.unlink(path);
  } catch (error) {
    if (codeOf(error) !== 'ENOENT') throw error;
  }
}

/** The name a temporary of {@link temporaryName} stands for (shortened as it was); itself if it is none. */
export function nameOfTemporary(temporary: string): string {
  return TEMPORARY_PATTERN.exec(temporary)?.[1] ?? temporary;
}

/** `.<name>.iau-tmp-<12 hex>`: hidden, recognisable, unique, and short enough for 255-byte names. */
export function temporaryName(name: string): string {
  return `.${shortenedTo(name, MAX_TEMPORARY_STEM_BYTES)}.iau-tmp-${randomBytes(6).toString('hex')}`;
}

/** Runs one file-system step, turning a raw failure into an ArchiveError for that step. */
async function attempt<T>(step: ArchiveStep, path: string, operation: () => Promise<T>): Promise<T> {
  try {
    return await operation();
  } catch (error) {
    throw wrap(error, step, path);
  }
}

/** What an error of the archive's disk as a whole means, and its fix. */
const DISK_REASONS: Partial<Record<string, string>> = {
  ENOSPC: "the archive's disk is full; the file stays in the watch folder until there is room (fix: free space on it)",
  EDQUOT: "the disk quota of the archive's disk is used up; the file stays in the watch folder until there is room (fix: free space, or raise the quota)",
  EROFS: "the archive's disk is mounted read-only; the file stays in the watch folder (fix: mount it read-write)",
};

/** Typed errors and aborts pass through; anything else becomes an ArchiveError naming the step. */
function wrap(error: unknown, step: ArchiveStep, path: string, target?: string): Error {
  if (error instanceof ArchiveError || error instanceof SourceChangedError || error instanceof SourceUnwritableError || isAbortError(error)) {
    return error as Error;
  }
  const code = codeOf(error);
  // Node's messages start with the code ("ENOSPC: no space left on device, copyfile ..."): say it once.
  const message = messageOf(error);
  const reason = code !== undefined && message.startsWith(`${code}: `) ? message.slice(code.length + 2) : message;
  const done = target === undefined ? '' : ` (the file is archived at ${target}; the source is still in place)`;
  // The disk as a whole: its own words, without the temporary names of Node's message.
  const disk = code === undefined ? undefined : DISK_REASONS[code];
  const said = disk === undefined ? `${code ?? 'error'}: ${reason}` : `${code}: ${disk}`;
  const where = disk === undefined ? path : (path.split(' -> ')[0] ?? path);
  return new ArchiveError(step, path, code, `archive failed at ${step} of ${where}: ${said}${done}`, {
    cause: error,
    target,
  });
}

function codeOf(error: unknown): string | undefined {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}

function errnoError(code: string, message: string): NodeJS.ErrnoException {
  const error: NodeJS.ErrnoException = new Error(`${code}: ${message}`);
  error.code = code;
  return error;
}
