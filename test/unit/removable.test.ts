import { mkdir, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { deviceNumbers, RemovableMedia } from '../../src/support/removable.js';
import { makeTempDir } from '../helpers/temp-dir.js';

describe('deviceNumbers', () => {
  it("splits a device number as glibc's major() and minor() do", () => {
    expect(deviceNumbers(0xfe00)).toEqual({ major: 254, minor: 0 });
    expect(deviceNumbers(0x811)).toEqual({ major: 8, minor: 17 });
    // Minors past 255 and majors past 4095 have bits of their own further up.
    expect(deviceNumbers(0x10_3_2c | (1 << 20))).toEqual({ major: 259, minor: 300 });
  });
});

describe('RemovableMedia', () => {
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
    const media = new RemovableMedia(temp.path);
    expect(await media.has((8 << 8) | 1)).toBe(true);
    expect(await media.has(8 << 8)).toBe(true);
    expect(await media.has((65 << 8) | 1)).toBe(false);
    // No block device behind it (tmpfs, a network share): not removable.
    expect(await media.has(0x2d)).toBe(false);
  });

  it("says this machine's temporary folder is not on removable media", async () => {
    expect(await new RemovableMedia().has((await stat(temp.path)).dev)).toBe(false);
  });
});
