/**
 * The disks that hold the archive folder and the watch folders. A disk that /etc/fstab does not
 * list (mounted by hand, by a desktop's automounter, by autofs), or that is mounted at the folder
 * itself, cannot be told from an ordinary folder by looking at it: with the disk away, the folder
 * is missing, or is the empty folder it was mounted on. Archiving there would put the originals
 * on the disk beneath (a Raspberry Pi's SD card), hidden once the disk is back; a missing watch
 * folder would stop the uploader at start.
 *
 * So each start notes in the state folder the mount point that holds each of those folders. A
 * later start with nothing mounted at a noted point treats the folder as on a disk not mounted
 * yet, as for a disk in /etc/fstab; and a running uploader stops archiving once the mount table
 * shows the archive's mount gone ({@link ArchiveMount}).
 */
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { isMounted, mountPointOf, NotMountedError, readUnmountedDisks, type AwayDisk, type SystemFiles } from '../support/mount-table.js';
import { readStateFile, writeStateFile } from '../support/state-file.js';
import type { Logger } from 'pino';
import type { Problems } from '../support/problems.js';
import { Waiters } from '../support/waiters.js';
import type { FileOutcome } from './process-file.js';

const DISKS_FILE = 'disks.json';

/** The noted mount point of each folder. */
function notes(stateDirectory: string): Record<string, unknown> {
  const noted = readStateFile(stateDirectory, DISKS_FILE);
  return typeof noted === 'object' && noted !== null ? (noted as Record<string, unknown>) : {};
}

/**
 * Notes the mount point that holds `folder` now (it exists and its disk is there), if it is not
 * the one noted already, and returns it.
 */
export function rememberDisk(stateDirectory: string, folder: string, mountinfo: string): string | undefined {
  const mountPoint = mountPointOf(mountinfo, folder);
  const noted = notes(stateDirectory);
  if (mountPoint !== undefined && noted[folder] !== mountPoint) writeStateFile(stateDirectory, DISKS_FILE, { ...noted, [folder]: mountPoint });
  return mountPoint;
}

/** The mount point noted for `folder` at an earlier start, when nothing is mounted there now. */
export function notedDiskAway(stateDirectory: string, folder: string, mountinfo: string): string | undefined {
  const point = notes(stateDirectory)[folder];
  return typeof point === 'string' && !isMounted(mountinfo, point) ? point : undefined;
}

/** The disks not mounted, from /etc/fstab and from the notes of `stateDirectory` (see {@link readUnmountedDisks}). */
export function readAwayDisks(system: SystemFiles, stateDirectory: string | undefined): ReturnType<typeof readUnmountedDisks> {
  return readUnmountedDisks(system, stateDirectory === undefined ? undefined : (folder, mountinfo) => notedDiskAway(stateDirectory, folder, mountinfo));
}

/** The error for `folder`, named by `variable`, on a disk that is away. */
export function notMountedError(variable: string, folder: string, away: AwayDisk, stateDirectory: string): NotMountedError {
  if (!away.noted) return NotMountedError.inFstab(variable, folder, away.point);
  return new NotMountedError(
    `${variable} ${folder} was on the disk mounted at ${away.point} when the uploader last started, and nothing is mounted there now`,
    'mount it',
    `to go on without that disk from now on, remove ${join(stateDirectory, DISKS_FILE)}`,
  );
}

/**
 * Why the archive folder must not be made or used now, if so: it is on a disk that /etc/fstab
 * mounts and nothing is mounted there, or nothing is mounted where its disk was at an earlier
 * start. Undefined where there is no mount table (not Linux).
 */
export async function archiveDiskAway(stateDirectory: string, archive: string, system: SystemFiles = {}): Promise<NotMountedError | undefined> {
  const away = (await readAwayDisks(system, stateDirectory))(archive);
  return away === undefined ? undefined : notMountedError('ARCHIVE_DIRECTORY', archive, away, stateDirectory);
}

/**
 * Whether the disk that held the archive folder at start is still mounted, while the uploader
 * runs: told of each change of the mount table, it answers when the disk went or came back, and
 * holds the files that wait for it.
 */
export class ArchiveMount {
  /** The mount point that held the archive folder at start; `/` (or none known) never goes. */
  readonly #point: string | undefined;
  readonly #archive: string;
  readonly #waiting = new Waiters();
  #gone = false;
  /** The device the archive folder is on while its disk is there (read at start and when it is back). */
  #device: number | undefined;

  constructor(archive: string, point: string | undefined) {
    this.#archive = archive;
    this.#point = point === '/' ? undefined : point;
    this.#readDevice();
  }

  /**
   * The device the archive folder must be on, where it has a disk of its own: the mount table is
   * read once a second, and a disk unmounted in between would leave the folder it was mounted
   * at, on the disk beneath.
   */
  get device(): number | undefined {
    return this.#device;
  }

  #readDevice(): void {
    if (this.#point === undefined) return;
    try {
      this.#device = statSync(this.#archive).dev;
    } catch {
      this.#device = undefined;
    }
  }

  /** Why nothing may be archived now: the disk is gone; undefined while it is there. */
  get gone(): string | undefined {
    if (!this.#gone) return undefined;
    return (
      `The disk of the archive folder ${this.#archive} (mounted at ${this.#point ?? '/'}) is gone. Nothing is uploaded ` +
      'or archived until it is mounted again, and nothing is put on the disk beneath: the files wait in the watch folder'
    );
  }

  /**
   * Resolves true at once while the disk is there, or when it is back; false when `signal`
   * aborts first. A file waits here before it is uploaded, so that none is sent while its
   * original could not be archived.
   */
  async whenThere(signal: AbortSignal): Promise<boolean> {
    while (this.#gone && !signal.aborted) {
      await new Promise<void>((resolve) => {
        const wake = (): void => {
          signal.removeEventListener('abort', wake);
          resolve();
        };
        signal.addEventListener('abort', wake);
        this.#waiting.add(wake);
      });
    }
    return !signal.aborted;
  }

  /** After the mount table changed: `gone` or `back` when the disk went or came back. */
  update(mountinfo: string): 'gone' | 'back' | undefined {
    if (this.#point === undefined) return undefined;
    const gone = !isMounted(mountinfo, this.#point);
    if (gone === this.#gone) return undefined;
    this.#gone = gone;
    if (!gone) {
      // Mounted again, maybe as another device (a USB disk plugged into another port).
      this.#readDevice();
      this.#waiting.wakeAll();
    }
    return gone ? 'gone' : 'back';
  }
}

/** Errors of the archive's disk as a whole: every file's archive fails alike until it is fixed. */
const DISK_WIDE_CODES = new Set(['ENOSPC', 'EDQUOT', 'EROFS']);

/**
 * The archive's disk refusing every file (full, or mounted read-only): each file says so once
 * (Coordinator), and this makes it a problem that lasts, for `status` and `health`, said when it
 * begins and when a file is archived again. The uploaded files wait in the watch folder.
 */
export class ArchiveFull {
  #raised = false;

  constructor(private readonly deps: { problems: Pick<Problems, 'raise' | 'clear'>; logger: Logger; archiveDirectory: string }) {}

  /** Told every file's outcome. */
  saw(outcome: FileOutcome): void {
    const { problems, logger, archiveDirectory } = this.deps;
    if (outcome.kind === 'failed' && outcome.stage === 'archive' && DISK_WIDE_CODES.has(outcome.code ?? '')) {
      if (this.#raised) return;
      this.#raised = true;
      const what = outcome.code === 'EROFS' ? 'is read-only' : 'is full';
      const fix = outcome.code === 'EROFS' ? 'mount it read-write' : 'free space on it';
      const message = `the disk of ARCHIVE_DIRECTORY ${archiveDirectory} ${what} (${outcome.code}): uploaded files stay in the watch folder until it takes them (fix: ${fix})`;
      problems.raise('archive-full', message);
      logger.warn({ code: outcome.code }, message);
      return;
    }
    const archived = (outcome.kind === 'uploaded' || outcome.kind === 'already-on-server') && outcome.disposition.mode === 'move';
    if (!this.#raised || !archived) return;
    this.#raised = false;
    problems.clear('archive-full');
    logger.info('the archive takes files again');
  }
}
