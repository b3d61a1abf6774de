/**
 * The disk the archive folder was on, remembered between runs. An archive on a disk that
 * /etc/fstab does not list (mounted by hand, by a desktop's automounter, by autofs) cannot be
 * told from an ordinary folder: with the disk away, the archive folder is simply missing, and
 * making it again at start would put it on the disk beneath (a Raspberry Pi's SD card), its
 * originals hidden once the disk is back. So each start in move mode notes in the state folder
 * which mount held the archive folder; a later start that finds the folder missing and another
 * mount where that one was does not make it. The user who wants the archive on the disk beneath
 * from then on creates the folder.
 */
import { stat } from 'node:fs/promises';
import { mountPointOf, NotMountedError, readMountTable, readUnmountedDisks, type SystemFiles } from '../support/mount-table.js';
import { readStateFile, writeStateFile } from '../support/state-file.js';

const DISK_FILE = 'archive-disk.json';

interface Remembered {
  archive?: unknown;
  mountPoint?: unknown;
}

/** Notes the mount point that holds `archive` now (it exists), if it is not the one noted already. */
export function rememberArchiveDisk(stateDirectory: string, archive: string, mountinfo: string): void {
  const mountPoint = mountPointOf(mountinfo, archive);
  const remembered = readStateFile(stateDirectory, DISK_FILE) as Remembered | undefined;
  if (mountPoint === undefined || (remembered?.archive === archive && remembered.mountPoint === mountPoint)) return;
  writeStateFile(stateDirectory, DISK_FILE, { archive, mountPoint });
}

/**
 * Why the archive folder must not be made or used now, if so: it is on a disk that /etc/fstab
 * mounts and nothing is mounted there, or it is missing and the disk that held it at an earlier
 * start is not mounted. Undefined where there is no mount table (not Linux).
 */
export async function archiveDiskAway(stateDirectory: string, archive: string, system: SystemFiles = {}): Promise<NotMountedError | undefined> {
  const [unmounted, table] = await Promise.all([readUnmountedDisks(system), readMountTable(system.mountTable)]);
  const point = unmounted(archive);
  if (point !== undefined) return NotMountedError.inFstab('ARCHIVE_DIRECTORY', archive, point);
  return table === undefined ? undefined : rememberedDiskAway(stateDirectory, archive, table);
}

/** The archive folder is missing, and the disk that held it at an earlier start is not mounted. */
async function rememberedDiskAway(stateDirectory: string, archive: string, mountinfo: string): Promise<NotMountedError | undefined> {
  const remembered = readStateFile(stateDirectory, DISK_FILE) as Remembered | undefined;
  const was = remembered?.mountPoint;
  if (remembered?.archive !== archive || typeof was !== 'string' || mountPointOf(mountinfo, archive) === was) return undefined;
  const missing = await stat(archive).then(
    () => false,
    (error: NodeJS.ErrnoException) => error.code === 'ENOENT',
  );
  if (!missing) return undefined;
  return new NotMountedError(
    `ARCHIVE_DIRECTORY ${archive} is missing, and the disk that held it (mounted at ${was}) is not mounted`,
    'mount it',
    `to archive on the disk beneath from now on, create ${archive}`,
  );
}
