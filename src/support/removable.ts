/**
 * Whether a file is on removable media (an SD card in a reader, a USB stick), as the kernel
 * says in sysfs: `/sys/dev/block/<major>:<minor>` leads to the partition or disk of a file
 * system, and the disk's `removable` is 1 for media that can be taken out of their drive. USB
 * hard disks, NAS disks and virtual disks say 0, and file systems without a block device
 * (tmpfs, NFS, SMB) have no entry: none of them counts as removable.
 */
import { readFile, realpath } from 'node:fs/promises';
import { dirname, join } from 'node:path';

/** The major and minor numbers of a device number as `stat` gives it (glibc's encoding). */
export function deviceNumbers(dev: number): { major: number; minor: number } {
  const d = BigInt(dev);
  const major = ((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn);
  const minor = (d & 0xffn) | ((d >> 12n) & ~0xffn);
  return { major: Number(major), minor: Number(minor) };
}

/** Answers for each device once: what sysfs says does not change while the media is in. */
export class RemovableMedia {
  readonly #known = new Map<number, Promise<boolean>>();

  constructor(private readonly sysfs = '/sys') {}

  /** Whether the file system with device number `dev` is on removable media; false when sysfs cannot tell. */
  has(dev: number): Promise<boolean> {
    let answer = this.#known.get(dev);
    if (answer === undefined) {
      answer = this.#look(dev);
      this.#known.set(dev, answer);
    }
    return answer;
  }

  async #look(dev: number): Promise<boolean> {
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
