/**
 * The disk that holds the archive folder. An archive on a disk that /etc/fstab does not list
 * (mounted by hand, by a desktop's automounter, by autofs), or that is mounted at the archive
 * folder itself, cannot be told from an ordinary folder by looking at it: with the disk away, the
 * folder is missing, or is the empty folder it was mounted on. Archiving there would put the
 * originals on the disk beneath (a Raspberry Pi's SD card), hidden once the disk is back.
 *
 * So each start in move mode notes in the state folder the mount point that holds the archive
 * folder. A later start with nothing mounted there does not archive; nor does a running uploader
 * once the mount table shows that mount gone ({@link ArchiveMount}).
 */
import { join } from 'node:path';
import { isMounted, mountPointOf, NotMountedError, readFstab, readMountTable, unmountedMountPointOf, type SystemFiles } from '../support/mount-table.js';
import { readStateFile, writeStateFile } from '../support/state-file.js';
import { Waiters } from '../support/waiters.js';

const DISK_FILE = 'archive-disk.json';

interface Remembered {
  archive?: unknown;
  mountPoint?: unknown;
}

/**
 * Notes the mount point that holds `archive` now (it exists), if it is not the one noted
 * already, and returns it.
 */
export function rememberArchiveDisk(stateDirectory: string, archive: string, mountinfo: string): string | undefined {
  const mountPoint = mountPointOf(mountinfo, archive);
  const remembered = readStateFile(stateDirectory, DISK_FILE) as Remembered | undefined;
  if (mountPoint !== undefined && (remembered?.archive !== archive || remembered.mountPoint !== mountPoint)) {
    writeStateFile(stateDirectory, DISK_FILE, { archive, mountPoint });
  }
  return mountPoint;
}

/**
 * Why the archive folder must not be made or used now, if so: it is on a disk that /etc/fstab
 * mounts and nothing is mounted there, or nothing is mounted where its disk was at an earlier
 * start. Undefined where there is no mount table (not Linux).
 */
export async function archiveDiskAway(stateDirectory: string, archive: string, system: SystemFiles = {}): Promise<NotMountedError | undefined> {
  const [fstab, table] = await Promise.all([readFstab(system.fstab), readMountTable(system.mountTable)]);
  if (table === undefined) return undefined;
  const point = fstab === undefined ? undefined : unmountedMountPointOf(archive, fstab, table);
  if (point !== undefined) return NotMountedError.inFstab('ARCHIVE_DIRECTORY', archive, point);
  const remembered = readStateFile(stateDirectory, DISK_FILE) as Remembered | undefined;
  const was = remembered?.mountPoint;
  if (remembered?.archive !== archive || typeof was !== 'string' || isMounted(table, was)) return undefined;
  return new NotMountedError(
    `ARCHIVE_DIRECTORY ${archive} was on the disk mounted at ${was} when the uploader last started, and nothing is mounted there now`,
    'mount it',
    `to archive without that disk from now on, remove ${join(stateDirectory, DISK_FILE)}`,
  );
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

  constructor(archive: string, point: string | undefined) {
    this.#archive = archive;
    this.#point = point === '/' ? undefined : point;
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
    if (!gone) this.#waiting.wakeAll();
    return gone ? 'gone' : 'back';
  }
}
