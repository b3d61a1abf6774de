/**
 * Late writes: a program that paused for longer than the stability window while it wrote a file
 * (a copy over a shaky network, a phone app sent to the background) gets the file uploaded half
 * written, and goes on writing after the original was archived, deleted or kept. The server then
 * holds the part it got. After a delete, or a move to another disk, the rest goes into a file no
 * name leads to any more, and is lost once the writer closes it.
 *
 * For a while after a file's last write ({@link lateWriteWatchMs}), the uploader keeps an eye on
 * the bytes it took care of: by name where a name still leads to them (the archive's hard link,
 * the original kept in place), and where their last name went, through a descriptor opened just
 * before it went, which keeps them readable. Once they changed and then stayed unchanged for the
 * stability window, the complete file is put back at its place in the watch folder, moved out of
 * the archive or copied out of the descriptor, and goes round the pipeline again; a warning names
 * the incomplete asset the server keeps, which only the user may delete. Keep mode's original is
 * in place already: it goes round by itself, and gets the warning only. Nothing is held open on
 * removable media (a card in a reader), which nobody writes to while it is emptied and which a
 * descriptor would keep from being ejected, nor on network and FUSE file systems, where an open
 * file's name does not simply go (support/disk-kinds.ts).
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import * as fsp from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import type { AfterUpload, WatchRoot } from '../config.js';
import type { Clock } from '../support/clock.js';
import { messageOf } from '../support/message.js';
import { DiskKinds } from '../support/disk-kinds.js';
import { Waiters } from '../support/waiters.js';
import { archiveFile, currentVersion, nameOfTemporary, removeIfExists, SourceChangedError, syncPath, temporaryName, type ArchiveFs } from './archive.js';
import { moveSidecar } from './after-upload.js';
import { hashFile } from './hash.js';
import { sidecarFollowing, sidecarNames } from './sidecar.js';
import { sameVersion, type FileVersion } from './types.js';

/**
 * How long after its last write a file is watched: a writer that paused longer is taken to be
 * done. Two minutes, or ten stability windows where the window is long (a slow share's).
 */
export function lateWriteWatchMs(waitMs: number): number {
  return Math.max(2 * 60_000, 10 * waitMs);
}

/** Files watched at once at most: past it the oldest watch ends early (a backlog goes faster than its watches end). */
export const MAX_WATCHED = 1_000;
/** The longest time between two looks at a file: the gap doubles from the check interval up to it. */
const MAX_GAP_MS = 30_000;
/** How long a complete version that could not be put back waits before the next try. */
const RETRY_MS = 60_000;

/**
 * What the user should know of an upload that may be incomplete: the one sign they get of a
 * program that pauses longer than the window while it writes.
 */
export function incompleteUploadAdvice(assetId: string | undefined, waitMs: number): string {
  const asset = assetId === undefined ? '' : ` (asset ${assetId})`;
  return (
    `The server keeps what it got first${asset}: if that is incomplete, delete it in Immich. A program paused while ` +
    `writing the file for longer than FILE_STABILITY_WAIT_SECONDS=${waitMs / 1000}: raise it`
  );
}

/** Where the bytes the server got are, once the original was taken care of. */
export type Bytes =
  /** A name still leads to them: the original kept in place, or the archive's hard link (or rename). */
  | { kind: 'named'; path: string }
  /** Their last name went (deleted, or copied to an archive on another disk): a descriptor opened before keeps them. */
  | { kind: 'held'; handle: FileHandle };

/** A sidecar deleted with its photo (delete mode): what it held, to go back with the complete version. */
export interface KeptSidecar {
  path: string;
  bytes: Buffer;
}

/**
 * The bytes of deleted sidecars kept at once at most, in all: XMP files are a few KB, so this
 * keeps those of every file watched, and a few large ones do not hold much memory.
 */
const MAX_KEPT_SIDECAR_BYTES = 16 * 1024 * 1024;

/** A file the server has, as it was uploaded, and where its bytes are now. */
export interface Disposed extends FileVersion {
  /** Where the original was, in its watch folder: a complete version is put back there. */
  path: string;
  root: WatchRoot;
  /** The asset the server has of it, when known, and the checksum of what it got. */
  assetId: string | undefined;
  checksum: string;
  afterUpload: AfterUpload;
  /** Move mode: the archive's copy. */
  archivedTo?: string;
  bytes: Bytes;
  /** Delete mode: the sidecar that went with it ({@link LateWrites.keepSidecar}). */
  sidecar?: KeptSidecar;
}

/** What a look at watched bytes found. */
export type LateWriteVerdict =
  /** Their name leads nowhere now (removed or renamed): nothing to follow. */
  | { kind: 'gone' }
  /** As they were uploaded. */
  | { kind: 'unchanged' }
  /** Written to since the last look. */
  | { kind: 'changing'; version: FileVersion }
  /** Written to since the upload, unchanged since, for less than the stability window. */
  | { kind: 'settling' }
  /** Written to since the upload, then unchanged for the stability window: the writer is done. */
  | { kind: 'complete'; version: FileVersion };

/**
 * Judges a look at watched bytes: `seen` (null: no regular file at their name), against the
 * version uploaded and the last change seen (its version, and since when it held, on `now`'s clock).
 */
export function judgeLateWrite(
  uploaded: FileVersion,
  changed: { version: FileVersion; since: number } | undefined,
  seen: FileVersion | null,
  now: number,
  waitMs: number,
): LateWriteVerdict {
  if (seen === null) return { kind: 'gone' };
  if (changed === undefined) return sameVersion(seen, uploaded) ? { kind: 'unchanged' } : { kind: 'changing', version: seen };
  if (!sameVersion(seen, changed.version)) return { kind: 'changing', version: seen };
  return now - changed.since >= waitMs ? { kind: 'complete', version: seen } : { kind: 'settling' };
}

export interface LateWritesOptions {
  clock: Clock;
  logger: Logger;
  /** The stability window and check interval, as for new files. */
  waitMs: number;
  intervalMs: number;
  /** How long after its last write a file is watched (default {@link lateWriteWatchMs}). */
  watchMs?: number;
  /** Puts a complete version back (the archive's, which never makes the archive folder again). */
  fs: ArchiveFs;
  /** Shows a path in log lines (relative to its watch folder). */
  display: (file: { path: string; root: WatchRoot }) => string;
  /** Which disks a descriptor may be held open on (default: as the kernel says). */
  disks?: DiskKinds;
}

interface Watch extends Disposed {
  /** When the watch ends, and when to look next, in `clock.monotonic()` time. */
  deadline: number;
  nextLook: number;
  gap: number;
  /** The last change seen, and since when it held. */
  changed?: { version: FileVersion; since: number };
  /** A put-back failed (said once). */
  failed?: boolean;
  /** The look in progress: looks at one file never overlap. */
  looking?: Promise<void>;
  ended?: boolean;
}

export class LateWrites {
  readonly #options: LateWritesOptions;
  readonly #watchMs: number;
  readonly #disks: DiskKinds;
  /** In the order they were added: the first is the oldest. */
  readonly #watched = new Set<Watch>();
  /** The newest watch of each path in the watch folders. */
  readonly #byPath = new Map<string, Watch>();
  readonly #stop = new AbortController();
  readonly #added = new Waiters();
  /** Final looks at watches that ended early, and looks at leftovers. */
  readonly #work = new Set<Promise<void>>();
  /** Folders a complete version is being put back into, with how many: a temporary seen there may be in use. */
  readonly #placing = new Map<string, number>();
  /** Leftover temporaries said already, by path: each rescan lists them again. */
  readonly #leftoversSaid = new Set<string>();
  /** The bytes of the sidecars kept by the watches, in all. */
  #keptSidecarBytes = 0;
  #loop: Promise<void> | undefined;

  constructor(options: LateWritesOptions) {
    this.#options = options;
    this.#watchMs = options.watchMs ?? lateWriteWatchMs(options.waitMs);
    this.#disks = options.disks ?? new DiskKinds();
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  /** Whether a file last written at `mtimeMs` is still within its watch (a writer may come back). */
  watches(version: FileVersion): boolean {
    return !this.#stop.signal.aborted && this.#options.clock.now() - version.mtimeMs < this.#watchMs;
  }

  /**
   * Opens the file whose last name is about to go, if the version uploaded (`uploaded`) is
   * watched, so that its bytes stay readable: pass the handle to {@link watch} once the name went,
   * or close it. Whatever is there is held: written to since the caller's last look, it is then
   * saved too (the watch finds it changed).
   */
  async hold(path: string, uploaded: FileVersion): Promise<FileHandle | undefined> {
    if (!this.watches(uploaded)) return undefined;
    let handle: FileHandle | undefined;
    try {
      handle = await fsp.open(path, 'r');
      const stats = await handle.stat();
      if (stats.isFile() && (await this.#disks.mayHoldOpen(path, stats.dev))) return handle;
    } catch {
      // Not there, or not readable: there is nothing to hold, and the caller's own checks say why.
    }
    await handle?.close().catch(() => undefined);
    return undefined;
  }

  /**
   * Reads the sidecar that is about to be deleted with a held file (delete mode), so that it can
   * go back beside the file's complete version: pass it to {@link watch} with the file, or to
   * {@link dropSidecar}. Undefined when it is not that version any more, cannot be read, or the
   * sidecars kept already hold as many bytes as they may.
   */
  async keepSidecar(sidecar: FileVersion & { path: string }): Promise<KeptSidecar | undefined> {
    if (this.#keptSidecarBytes + sidecar.size > MAX_KEPT_SIDECAR_BYTES) return undefined;
    this.#keptSidecarBytes += sidecar.size;
    try {
      const bytes = await fsp.readFile(sidecar.path);
      if (bytes.length === sidecar.size) return { path: sidecar.path, bytes };
    } catch {
      // Gone or unreadable: it is not deleted either, or there is nothing to keep.
    }
    this.#keptSidecarBytes -= sidecar.size;
    return undefined;
  }

  /** A kept sidecar that no watch takes. */
  dropSidecar(sidecar: KeptSidecar | undefined): void {
    if (sidecar) this.#keptSidecarBytes -= sidecar.bytes.length;
  }

  /** Watches the bytes of a file the server has; takes over a held descriptor (and a kept sidecar), and lets go of them when the watch ends. */
  watch(file: Disposed): void {
    if (!this.watches(file)) {
      void release(file.bytes);
      this.dropSidecar(file.sidecar);
      return;
    }
    const { clock } = this.#options;
    const now = clock.monotonic();
    // Measured from the last write on the system's clock; never longer than a whole watch from now
    // (a file dated in the future by a wrong clock).
    const left = Math.min(this.#watchMs, file.mtimeMs + this.#watchMs - clock.now());
    const gap = this.#firstGap();
    const watch: Watch = { ...file, deadline: now + left, nextLook: now + gap, gap };
    this.#watched.add(watch);
    this.#byPath.set(file.path, watch);
    if (this.#watched.size > MAX_WATCHED) {
      const oldest = this.#watched.values().next().value;
      if (oldest) this.#endEarly(oldest);
    }
    this.#added.wakeAll();
  }

  /**
   * A temporary of ours (`.name.iau-tmp-…`) that a scan listed in a watch folder. Outside a
   * put-back under way, a stop left it while a complete version was copied back. A second name of
   * a file that was placed (the stop came between the link and the unlink) is removed: the file
   * keeps its bytes. Any other may be incomplete, or the only complete copy of the file: it stays,
   * and the user is told once. Never rejects.
   */
  leftover(path: string, root: WatchRoot): void {
    if (this.#placing.has(dirname(path)) || this.#leftoversSaid.has(path)) return;
    this.#leftoversSaid.add(path);
    this.#track(this.#leftover(path, root));
  }

  /**
   * The asset of an incomplete version of `file` that the server got: a program that paused
   * longer than the window, then wrote the file again from its start at the same path (the
   * original gone meanwhile), makes a new file, whose first bytes are what was uploaded. Read
   * only when a watch of the path holds a shorter upload, which a new photo of an old name
   * seldom does (its first bytes then differ).
   */
  async incompleteVersionOf(file: FileVersion & { path: string }): Promise<string | undefined> {
    const watch = this.#byPath.get(file.path);
    // Keep mode's watch is of this very path: it tells of any change itself.
    if (watch?.assetId === undefined || watch.afterUpload === 'keep' || watch.size === 0 || watch.size >= file.size) return undefined;
    try {
      return (await hashPrefix(file.path, watch.size)) === watch.checksum.toLowerCase() ? watch.assetId : undefined;
    } catch {
      return undefined; // gone or unreadable: the pipeline says what became of it
    }
  }

  /** Files watched now. */
  get size(): number {
    return this.#watched.size;
  }

  /**
   * Stops watching: one last look at every file, whose complete version is put back if it
   * changed (written to still, maybe: the warning says what was there), then the descriptors close.
   */
  async close(): Promise<void> {
    this.#stop.abort();
    this.#added.wakeAll();
    await this.#loop;
    await Promise.all([...this.#watched].map((watch) => this.#look(watch, true)));
    await Promise.all(this.#work);
  }

  async #run(): Promise<void> {
    const { clock, intervalMs } = this.#options;
    while (!this.#stop.signal.aborted) {
      if (this.#watched.size === 0) {
        await this.#added.next();
        continue;
      }
      try {
        await clock.sleep(intervalMs, this.#stop.signal);
      } catch {
        return; // closed
      }
      const now = clock.monotonic();
      await Promise.all([...this.#watched].filter((watch) => watch.nextLook <= now).map((watch) => this.#look(watch, false)));
    }
  }

  /** The watch of the oldest file ends before its time, with a last look where its bytes have no name. */
  #endEarly(watch: Watch): void {
    this.#forget(watch);
    // Named bytes stay where their name is, whatever happens to them.
    if (watch.bytes.kind === 'named') return this.#end(watch);
    this.#track(this.#look(watch, true));
  }

  #track(work: Promise<void>): void {
    this.#work.add(work);
    void work.finally(() => this.#work.delete(work));
  }

  async #leftover(path: string, root: WatchRoot): Promise<void> {
    const { logger } = this.#options;
    const shown = this.#options.display({ path, root });
    const name = nameOfTemporary(basename(path));
    try {
      const stats = await fsp.lstat(path);
      if (stats.nlink > 1) {
        await fsp.unlink(path);
        logger.info({ file: shown }, `removed ${shown}, a second name of ${name} left by a stop while it was put back into the watch folder`);
        return;
      }
    } catch (error) {
      // Gone meanwhile: nothing to say. Otherwise it stays, and is told about below.
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    }
    logger.warn(
      { file: shown },
      `${shown} is a copy of ${name} left by a stop while ${name}, written to after its upload, was put back into the watch folder. ` +
        `It is not uploaded, as it may be incomplete: look at it, then rename it to ${name} to have it uploaded, or delete it`,
    );
  }

  /** One look at a file, after the one in progress; `final`: the last, which puts back any change it finds. */
  #look(watch: Watch, final: boolean): Promise<void> {
    const look = (watch.looking ?? Promise.resolve()).then(() => (watch.ended ? undefined : this.#lookNow(watch, final)));
    watch.looking = look;
    return look;
  }

  async #lookNow(watch: Watch, final: boolean): Promise<void> {
    const { clock, waitMs, intervalMs } = this.#options;
    const seen = await versionOf(this.#options.fs, watch.bytes);
    const now = clock.monotonic();
    let verdict = judgeLateWrite(watch, watch.changed, seen, now, waitMs);
    // The last look does not wait for a change to settle: this is the last chance to save it.
    if (final && seen !== null && (verdict.kind === 'changing' || verdict.kind === 'settling')) verdict = { kind: 'complete', version: seen };
    switch (verdict.kind) {
      case 'gone':
        return this.#end(watch);
      case 'unchanged':
        if (final || now >= watch.deadline) return this.#end(watch);
        watch.nextLook = Math.min(now + watch.gap, watch.deadline);
        watch.gap = Math.min(watch.gap * 2, MAX_GAP_MS);
        return;
      case 'changing':
        watch.changed = { version: verdict.version, since: now };
        watch.nextLook = now + intervalMs;
        return;
      case 'settling':
        watch.nextLook = now + intervalMs;
        return;
      case 'complete': {
        const result = await this.#putBack(watch, verdict.version);
        if (final) return this.#end(watch);
        switch (result) {
          case 'changing':
            watch.nextLook = now + intervalMs;
            return;
          case 'failed':
            watch.nextLook = now + RETRY_MS;
            return;
          case 'done':
            // The writer still has the file it wrote, not the copy put back: what it writes after
            // another pause goes there, and is put back again. A name that led to the bytes now
            // leads to them from the watch folder, and they are watched again when they leave it.
            if (watch.bytes.kind === 'named') return this.#end(watch);
            Object.assign(watch, verdict.version, { assetId: undefined, changed: undefined, failed: undefined });
            watch.gap = this.#firstGap();
            watch.nextLook = now + watch.gap;
            watch.deadline = now + this.#watchMs;
            return;
        }
      }
    }
  }

  #forget(watch: Watch): void {
    this.#watched.delete(watch);
    if (this.#byPath.get(watch.path) === watch) this.#byPath.delete(watch.path);
  }

  #firstGap(): number {
    return Math.max(this.#options.intervalMs, 1_000);
  }

  #end(watch: Watch): void {
    watch.ended = true;
    this.#forget(watch);
    void release(watch.bytes);
    this.dropSidecar(watch.sidecar);
  }

  /**
   * Puts the complete version of a file back at its place in the watch folder (keep mode: it is
   * there), and says so. 'changing': it was written to again meanwhile.
   */
  async #putBack(watch: Watch, version: FileVersion): Promise<'done' | 'changing' | 'failed'> {
    const { logger, waitMs } = this.#options;
    const shown = this.#options.display(watch);
    const advice = incompleteUploadAdvice(watch.assetId, waitMs);
    const fields = { file: shown, assetId: watch.assetId, bytes: version.size };
    if (watch.afterUpload === 'keep') {
      logger.warn(fields, `${shown} was written to again after it was uploaded: its new version is uploaded as well. ${advice}`);
      return 'done';
    }
    const folder = dirname(watch.path);
    this.#placing.set(folder, (this.#placing.get(folder) ?? 0) + 1);
    try {
      const placed = watch.bytes.kind === 'named' ? await this.#moveBack(watch, watch.bytes.path, version) : await this.#copyBack(watch, watch.bytes.handle);
      const sidecars = await this.#sidecarsBack(watch, placed);
      const as = placed === watch.path ? '' : ` as ${basename(placed)}`;
      const from = watch.bytes.kind === 'named' ? 'moved out of the archive' : `saved from the ${watch.afterUpload === 'delete' ? 'deleted' : 'moved'} file`;
      const archived = watch.bytes.kind === 'held' && watch.archivedTo !== undefined ? ` The archive's copy ${watch.archivedTo} holds what was uploaded.` : '';
      logger.warn(
        { ...fields, putBack: placed },
        `${shown} was written to again after it was uploaded and ${watch.afterUpload === 'delete' ? 'deleted' : 'archived'}: ` +
          `its complete version was ${from}, back into the watch folder${as}${sidecars}, to be uploaded again.${archived} ${advice}`,
      );
      return 'done';
    } catch (error) {
      if (error instanceof SourceChangedError) return 'changing';
      if (!watch.failed) {
        const where = watch.bytes.kind === 'named' ? ` It is at ${watch.bytes.path}.` : ' Its descriptor is kept open until the uploader stops.';
        logger.error(
          { ...fields, err: error },
          `${shown} was written to again after it was uploaded, and its complete version could not be put back into the watch folder: ${messageOf(error)}. It is tried again every minute.${where}`,
        );
      }
      watch.failed = true;
      return 'failed';
    } finally {
      const left = (this.#placing.get(folder) ?? 1) - 1;
      if (left === 0) this.#placing.delete(folder);
      else this.#placing.set(folder, left);
    }
  }

  /**
   * The photo's own sidecars (`photo.jpg.xmp`) that followed it into the archive go back beside
   * it, so that the complete version is sent with them; a shared `photo.xmp` may serve other
   * files there, and stays. Says which went back, or why one could not, for the warning.
   */
  async #sidecarsBack(watch: Watch, placed: string): Promise<string> {
    const { archivedTo } = watch;
    if (watch.sidecar) return this.#sidecarRewritten(watch.sidecar, watch.path, placed);
    if (archivedTo === undefined) return '';
    const words: string[] = [];
    for (const sidecar of sidecarNames(archivedTo).own) {
      const version = await currentVersion(this.#options.fs, sidecar).catch(() => null);
      if (version === null) continue;
      try {
        words.push(`with ${basename(await moveSidecar({ path: sidecar, ...version }, watch.root, archivedTo, placed, this.#options.fs))}`);
      } catch (error) {
        words.push(`without ${basename(sidecar)}, which stays in the archive (${messageOf(error)})`);
      }
    }
    return words.length === 0 ? '' : ` ${words.join(' and ')}`;
  }

  /**
   * A sidecar deleted with the photo is written again beside the complete version put back (a
   * temporary, synced, then linked: never over a file, which keeps it from going back).
   */
  async #sidecarRewritten(sidecar: KeptSidecar, photo: string, placed: string): Promise<string> {
    const { fs } = this.#options;
    const target = sidecarFollowing(sidecar.path, photo, placed);
    const temporary = join(dirname(target), temporaryName(basename(target)));
    try {
      await fsp.writeFile(temporary, sidecar.bytes, { flag: 'wx' });
      await syncPath(fs, temporary);
      await fsp.link(temporary, target);
      return ` with ${basename(target)}`;
    } catch (error) {
      const why = (error as NodeJS.ErrnoException).code === 'EEXIST' ? 'another file has its name' : messageOf(error);
      return ` without its sidecar ${basename(target)}, deleted with the first part (${why})`;
    } finally {
      await removeIfExists(fs, temporary).catch(() => undefined);
    }
  }

  /** The archive's link goes back to the watch folder (never over a file: a numbered name then). */
  async #moveBack(watch: Watch, archived: string, version: FileVersion): Promise<string> {
    await this.#assertRootThere(watch);
    const { checksum } = await hashFile(archived);
    return (await archiveFile({ source: archived, root: watch.root, checksum, expected: version, fs: this.#options.fs, target: watch.path })).target;
  }

  /** The bytes are copied out of the descriptor to a hidden temporary beside the original's place, then placed. */
  async #copyBack(watch: Watch, handle: FileHandle): Promise<string> {
    const { fs } = this.#options;
    await this.#assertRootThere(watch);
    const folder = dirname(watch.path);
    // Its folder may have gone with its last file (REMOVE_EMPTY_FOLDERS).
    await fs.mkdir(folder, { recursive: true });
    const temporary = join(folder, temporaryName(basename(watch.path)));
    try {
      await pipeline(handle.createReadStream({ start: 0, autoClose: false }), createWriteStream(temporary, { flags: 'wx' }));
      const { atimeMs, mtimeMs } = await handle.stat();
      // The writer's time, as a move would have kept it.
      await fs.utimes(temporary, atimeMs, mtimeMs).catch(() => undefined);
      await syncPath(fs, temporary);
      const expected = await currentVersion(fs, temporary);
      if (expected === null) throw new Error(`the copy ${temporary} is gone`);
      const { checksum } = await hashFile(temporary);
      return (await archiveFile({ source: temporary, root: watch.root, checksum, expected, fs, target: watch.path })).target;
    } finally {
      await removeIfExists(fs, temporary).catch(() => undefined);
    }
  }

  /** A watch folder that is gone is on a disk taken away: nothing is made at its path, on the disk beneath. */
  async #assertRootThere(watch: Watch): Promise<void> {
    try {
      await this.#options.fs.lstat(watch.root.path);
    } catch (error) {
      throw new Error(`the watch folder ${watch.root.path} is gone (${messageOf(error)})`, { cause: error });
    }
  }
}

/** The version of watched bytes now; null when their name leads nowhere (or cannot be looked at). */
async function versionOf(fs: ArchiveFs, bytes: Bytes): Promise<FileVersion | null> {
  try {
    if (bytes.kind === 'named') return await currentVersion(fs, bytes.path);
    const stats = await bytes.handle.stat();
    return { size: stats.size, mtimeMs: stats.mtimeMs };
  } catch {
    return null;
  }
}

/** The SHA-1 of a file's first `length` bytes. */
async function hashPrefix(path: string, length: number): Promise<string> {
  const hash = createHash('sha1');
  await pipeline(createReadStream(path, { start: 0, end: length - 1 }), hash);
  return hash.digest('hex');
}

async function release(bytes: Bytes): Promise<void> {
  if (bytes.kind === 'held') await bytes.handle.close().catch(() => undefined);
}
