import { mkdir, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { deviceNumbers, DiskKinds } from '../../src/support/disk-kinds.js';
import { makeTempDir } from '../helpers/temp-dir.js';

describe('deviceNumbers', () => {
  it("splits a device number as glibc's major() and minor() do", () => {
    expect(deviceNumbers(0xfe00)).toEqual({ major: 254, minor: 0 });
    expect(deviceNumbers(0x811)).toEqual({ major: 8, minor: 17 });
    // Minors past 255 and majors past 4095 have bits of their own further up.
    expect(deviceNumbers(0x10_3_2c | (1 << 20))).toEqual({ major: 259, minor: 300 });
  });
});

describe('DiskKinds', () => {
  let temp: { path: string; remove: () => Promise<void> };

  beforeEach(async () => {
    temp = await makeTempDir('iau-sysfs-');
  });

  afterEach(async () => {
    await temp.remove();
  });

  /** A disk in a fake sysfs, with its first partition, as the kernel lays them out. */
  async function disk(name: string, major: number, removable: '0' | '1'): Promise<void> {
    const folder = join(temp.path, 'devices/pci0000:00/usb1/block', name);
    await mkdir(join(folder, `${name}1`), { recursive: true });
    await writeFile(join(folder, 'removable'), `${removable}\n`);
    await mkdir(join(temp.path, 'dev/block'), { recursive: true });
    await symlink(`../../devices/pci0000:00/usb1/block/${name}`, join(temp.path, 'dev/block', `${major}:0`));
    await symlink(`../../devices/pci0000:00/usb1/block/${name}/${name}1`, join(temp.path, 'dev/block', `${major}:1`));
  }

  it("answers from the disk's removable flag, for the disk and its partitions", async () => {
    await disk('sdb', 8, '1');
    await disk('sda', 65, '0');
    const disks = new DiskKinds(temp.path);
    expect(await disks.removable((8 << 8) | 1)).toBe(true);
    expect(await disks.removable(8 << 8)).toBe(true);
    expect(await disks.removable((65 << 8) | 1)).toBe(false);
    // No block device behind it (tmpfs, a network share): not removable.
    expect(await disks.removable(0x2d)).toBe(false);
    // Where the file is, its file system is local: only removable media decide.
    expect(await disks.mayHoldOpen(temp.path, (8 << 8) | 1)).toBe(false);
    expect(await disks.mayHoldOpen(temp.path, (65 << 8) | 1)).toBe(true);
  });

  it("may hold a file open in this machine's temporary folder (a local disk), not where nothing can be looked at", async () => {
    const disks = new DiskKinds();
    expect(await disks.mayHoldOpen(temp.path, (await stat(temp.path)).dev)).toBe(true);
    expect(await new DiskKinds().mayHoldOpen(join(temp.path, 'gone'), 0x1234)).toBe(false);
  });
});
