/**
 * What kind of disk a file is on, for whether a descriptor may be kept open on a file after its
 * name was removed (late-writes.ts). On a local disk that is harmless: the name goes, the bytes
 * stay readable through the descriptor until it closes. Elsewhere it is not:
 * - removable media (an SD card in a reader, a USB stick): the card could not be ejected
 *   ("target is busy") while the descriptor is open. The kernel says in sysfs:
 *   `/sys/dev/block/<major>:<minor>` leads to the partition or disk of a file system, and the
 *   disk's `removable` is 1 for media that can be taken out of their drive (USB hard disks,
 *   NAS disks and virtual disks say 0);
 * - network and FUSE file systems (NFS, SMB, sshfs, ntfs-3g): the name of an open file does not
 *   go, it becomes a hidden `.nfs…` or `.fuse_hidden…` file, or the file stays listed with its
 *   deletion pending, until the descriptor closes. `statfs` says which file system it is.
 */
import { readFile, realpath, statfs } from 'node:fs/promises';
import { dirname, join } from 'node:path';

/** `statfs` types of file systems where an open file's name does not simply go. */
const NOT_LOCAL: ReadonlySet<number> = new Set([
  0x6969, // NFS
  0x517b, // SMB (old smbfs)
  0xff534d42, // CIFS
  0xfe534d42, // SMB2/3
  0x65735546, // FUSE (sshfs, rclone, ntfs-3g, virtiofs)
  0x01021997, // 9p (WSL's and some VMs' shared folders)
  0x00c36400, // Ceph
  0x5346414f, // AFS
]);

/** The major and minor numbers of a device number as `stat` gives it (glibc's encoding). */
export function deviceNumbers(dev: number): { major: number; minor: number } {
  const d = BigInt(dev);
  const major = ((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn);
  const minor = (d & 0xffn) | ((d >> 12n) & ~0xffn);
  return { major: Number(major), minor: Number(minor) };
}

/** Answers for each disk once: what it is does not change while it is mounted. */
export class DiskKinds {
  readonly #holdable = new Map<number, Promise<boolean>>();

  constructor(private readonly sysfs = '/sys') {}

  /**
   * Whether a descriptor may be kept open on `path`, a file on the disk with device number
   * `dev`, after its name goes: a local disk that is not removable media. False when unsure.
   */
  mayHoldOpen(path: string, dev: number): Promise<boolean> {
    let answer = this.#holdable.get(dev);
    if (answer === undefined) {
      answer = this.#look(path, dev);
      this.#holdable.set(dev, answer);
    }
    return answer;
  }

  async #look(path: string, dev: number): Promise<boolean> {
    try {
      if (NOT_LOCAL.has((await statfs(path)).type)) return false;
    } catch {
      return false;
    }
    return !(await this.removable(dev));
  }

  /** Whether the file system with device number `dev` is on removable media; false when sysfs cannot tell. */
  async removable(dev: number): Promise<boolean> {
    const { major, minor } = deviceNumbers(dev);
    try {
      const device = await realpath(join(this.sysfs, 'dev/block', `${major}:${minor}`));
      // A partition has no `removable` of its own: its disk, the folder above, has.
      for (const folder of [device, dirname(device)]) {
        const flag = await readFile(join(folder, 'removable'), 'utf8').catch(() => undefined);
        if (flag !== undefined) return flag.trim() === '1';
      }
    } catch {
      // No block device behind it (tmpfs, a network share), or no sysfs here.
    }
    return false;
  }
}
