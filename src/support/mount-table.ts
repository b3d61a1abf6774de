/**
 * The system's mount table: a card or a disk mounted into a watch folder brings no file event. A
 * watch on a folder stays on the folder it was made on, and a mount covers that folder with
 * another file system whose files the watch never sees (the same when it is unmounted again).
 * So a running daemon reads the table every second and has the detector walk the folders whose
 * mounts changed; the archive's disk coming back lets the files that waited for it go on.
 *
 * Linux only: `/proc/self/mountinfo` (proc(5)). Elsewhere there is no table to read, and the
 * periodic rescan finds what a mount brought.
 */
import { readFile } from 'node:fs/promises';
import type { Clock } from './clock.js';
import { isAtOrInside, isInside } from './paths.js';

export const MOUNT_TABLE_PATH = '/proc/self/mountinfo';
export const FSTAB_PATH = '/etc/fstab';

/** Files to read instead of {@link MOUNT_TABLE_PATH} and {@link FSTAB_PATH}: tests give their own. */
export interface SystemFiles {
  mountTable?: string;
  fstab?: string;
}

export interface MountTableOptions {
  /** The table's text, undefined where there is none ({@link readMountTable}). */
  read: () => Promise<string | undefined>;
  clock: Clock;
  intervalMs: number;
  /** The mount points whose mounts changed since the last reading, and the new reading. Must not throw. */
  onChange: (points: string[], mountinfo: string) => void;
}

/**
 * Reads the mount table every `intervalMs` and reports what changed, until closed. Made by
 * {@link MountTable.follow}, after its first reading, so that a mount made after the call is a
 * change.
 */
export class MountTable {
  readonly #options: MountTableOptions;
  readonly #abort = new AbortController();
  #text: string;
  #loop: Promise<void> = Promise.resolve();

  private constructor(options: MountTableOptions, first: string) {
    this.#options = options;
    this.#text = first;
  }

  /** Undefined where there is no table to read (not Linux). */
  static async follow(options: MountTableOptions): Promise<MountTable | undefined> {
    const first = await options.read().catch(() => undefined);
    if (first === undefined) return undefined;
    const table = new MountTable(options, first);
    table.#loop = table.#follow();
    return table;
  }

  /** The latest reading's text. */
  get text(): string {
    return this.#text;
  }

  async close(): Promise<void> {
    this.#abort.abort();
    await this.#loop;
  }

  async #follow(): Promise<void> {
    const { read, clock, intervalMs, onChange } = this.#options;
    let mounts = mountsOf(this.#text);
    for (;;) {
      try {
        await clock.sleep(intervalMs, this.#abort.signal);
      } catch {
        return; // closed
      }
      const now = await read().catch(() => undefined);
      if (this.#abort.signal.aborted) return;
      if (now === undefined || now === this.#text) continue;
      this.#text = now;
      const before = mounts;
      mounts = mountsOf(now);
      const points = changedMountPoints(before, mounts);
      if (points.length > 0) onChange(points, now);
    }
  }
}

/** The table's text, or undefined where there is none (not Linux, no /proc). */
export function readMountTable(path = MOUNT_TABLE_PATH): Promise<string | undefined> {
  return readFile(path, 'utf8').catch(() => undefined);
}

/** The fstab's text, or undefined where there is none. */
export function readFstab(path = FSTAB_PATH): Promise<string | undefined> {
  return readFile(path, 'utf8').catch(() => undefined);
}

/** A folder's disk that is not mounted: where it is mounted, and whether that was noted at an earlier start rather than read from /etc/fstab. */
export interface AwayDisk {
  point: string;
  noted: boolean;
}

/** The disk of a folder when it is not mounted; undefined for every folder where there is no mount table. */
export type UnmountedDisk = (folder: string) => AwayDisk | undefined;

/**
 * The fstab and the mount table as they are now, for {@link UnmountedDisk}'s questions: the
 * mount point that /etc/fstab lists for a folder with nothing mounted there
 * ({@link unmountedMountPointOf}), else the one `noted` for it, if given.
 */
export async function readUnmountedDisks(
  system: SystemFiles = {},
  noted?: (folder: string, mountinfo: string) => string | undefined,
): Promise<UnmountedDisk> {
  const [fstab, table] = await Promise.all([readFstab(system.fstab), readMountTable(system.mountTable)]);
  if (table === undefined) return () => undefined;
  return (folder) => {
    const inFstab = fstab === undefined ? undefined : unmountedMountPointOf(folder, fstab, table);
    if (inFstab !== undefined) return { point: inFstab, noted: false };
    const point = noted?.(folder, table);
    return point === undefined ? undefined : { point, noted: true };
  };
}

/**
 * A watch folder or the archive is on a disk that is not mounted: `once` stops rather than make
 * the archive on the disk beneath, or find no watch folder.
 */
export class NotMountedError extends Error {
  override readonly name = 'NotMountedError';
  /** The fix (how to mount the disk), and what else may be done about it if anything. */
  readonly #fixes: string;

  /**
   * `situation`: what is wrong; `fix`: how to mount the disk (`mount it (mount /mnt/usb)`);
   * `otherwise`: what else may be done about it, if anything.
   */
  constructor(
    readonly situation: string,
    fix: string,
    otherwise?: string,
  ) {
    super(`${situation}: ${fix} and run again${otherwise === undefined ? '' : `; ${otherwise}`}`);
    this.#fixes = otherwise === undefined ? fix : `${fix}; ${otherwise}`;
  }

  /** `variable`: the option that names `path` (`ARCHIVE_DIRECTORY`, `WATCH_DIRECTORIES`). */
  static inFstab(variable: string, path: string, mountPoint: string): NotMountedError {
    return new NotMountedError(
      `${variable} ${path} is on ${mountPoint}, which /etc/fstab mounts, but nothing is mounted there`,
      `mount it (mount ${mountPoint})`,
    );
  }

  /** The line `watch` logs while it waits for the disk. */
  get waiting(): string {
    return `${this.situation}: waiting for it before anything is uploaded (${this.#fixes})`;
  }
}

/** One line of a mountinfo text. */
interface Mount {
  id: string;
  point: string;
  /** The file system's type (`ext4`, `nfs4`). */
  type: string | undefined;
}

/**
 * The lines of a mountinfo text: mount ID, parent ID, major:minor, root, mount point, options,
 * optional fields, `-`, file system type, source, super options. Fields are separated by spaces,
 * and a space, tab, newline or backslash in a path is written as an octal escape.
 */
function parseMountInfo(mountinfo: string): Mount[] {
  const mounts: Mount[] = [];
  for (const line of mountinfo.split('\n')) {
    const [id, , , , point] = line.split(' ');
    if (id === undefined || point === undefined) continue;
    mounts.push({ id, point: unescapeOctal(point), type: line.split(' - ')[1]?.split(' ')[0] });
  }
  return mounts;
}

/**
 * The mounts in a mountinfo text, each as its mount ID and mount point (`"37 /media/card"`).
 * The ID is new for every mount, so a card taken out and put back in is a change; remounting
 * with other options (read-only, say) keeps it, and is none.
 */
export function mountsOf(mountinfo: string): Set<string> {
  return new Set(parseMountInfo(mountinfo).map(({ id, point }) => `${id} ${point}`));
}

/**
 * File systems on which changes made elsewhere (another machine, the Windows side of WSL) bring
 * no file event here: inotify sees only what this machine's kernel writes.
 */
const NETWORK_FILE_SYSTEMS = new Set(['nfs', 'nfs4', 'cifs', 'smb3', 'smbfs', '9p', 'fuse.sshfs', 'fuse.rclone']);

/** The mount that holds `path`: of those whose point holds it, the longest, and of those at one point, the last (on top). */
function mountOf(mountinfo: string, path: string): Mount | undefined {
  let best: Mount | undefined;
  for (const mount of parseMountInfo(mountinfo)) {
    if (!isAtOrInside(path, mount.point)) continue;
    if (best === undefined || mount.point.length >= best.point.length) best = mount;
  }
  return best;
}

/** The mount point of the file system that holds `path` (`/` for most). */
export function mountPointOf(mountinfo: string, path: string): string | undefined {
  return mountOf(mountinfo, path)?.point;
}

/**
 * The network file system that holds `path`, such as `nfs4` or `cifs`; undefined on any other
 * file system.
 */
export function networkFileSystemOf(mountinfo: string, path: string): string | undefined {
  const type = mountOf(mountinfo, path)?.type;
  return type !== undefined && NETWORK_FILE_SYSTEMS.has(type) ? type : undefined;
}

/** The mount points that an fstab(5) text lists (swap and `none` left out). */
export function fstabMountPoints(fstab: string): string[] {
  const points: string[] = [];
  for (const line of fstab.split('\n')) {
    const fields = line.trim().split(/\s+/);
    const point = fields[1];
    if (fields[0] === undefined || fields[0].startsWith('#') || point === undefined || !point.startsWith('/')) continue;
    points.push(unescapeOctal(point));
  }
  return points;
}

/**
 * The mount point that fstab lists for `path` (the innermost that holds it, `/` aside) when
 * nothing is mounted there: a disk not mounted yet, or that failed to mount.
 */
export function unmountedMountPointOf(path: string, fstab: string, mountinfo: string): string | undefined {
  let innermost: string | undefined;
  for (const point of fstabMountPoints(fstab)) {
    if (point === '/' || !isAtOrInside(path, point)) continue;
    if (innermost === undefined || point.length > innermost.length) innermost = point;
  }
  if (innermost === undefined || isMounted(mountinfo, innermost)) return undefined;
  return innermost;
}

/** Whether something is mounted at `point`. */
export function isMounted(mountinfo: string, point: string): boolean {
  return parseMountInfo(mountinfo).some((mount) => mount.point === point);
}

/** The mount points of mounts in one set and not the other, each once. */
export function changedMountPoints(before: ReadonlySet<string>, after: ReadonlySet<string>): string[] {
  const points = new Set<string>();
  for (const mount of before) if (!after.has(mount)) points.add(pointOf(mount));
  for (const mount of after) if (!before.has(mount)) points.add(pointOf(mount));
  return [...points];
}

/**
 * Which folders to walk again after the mounts at `points` changed, for watch folders `roots`:
 * a mount point in a watch folder (itself, or below it when `recursive`), or the watch folder
 * itself when the mount holds it (a disk mounted at /mnt/usb for /mnt/usb/photos).
 */
export function foldersToWalk<Root extends { path: string }>(
  points: readonly string[],
  roots: readonly Root[],
  recursive: boolean,
): { folder: string; root: Root }[] {
  const walks: { folder: string; root: Root }[] = [];
  for (const root of roots) {
    if (points.some((point) => isAtOrInside(root.path, point))) {
      walks.push({ folder: root.path, root });
    } else if (recursive) {
      for (const point of points) if (isInside(point, root.path)) walks.push({ folder: point, root });
    }
  }
  return walks;
}

function pointOf(mount: string): string {
  return mount.slice(mount.indexOf(' ') + 1);
}

function unescapeOctal(text: string): string {
  return text.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}
