import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { archiveDiskAway, rememberArchiveDisk } from '../../src/pipeline/archive-disk.js';
import type { SystemFiles } from '../../src/support/mount-table.js';
import { makeTempDir } from '../helpers/temp-dir.js';

let dir: Awaited<ReturnType<typeof makeTempDir>>;
let state: string;
let usb: string;
let archive: string;
let system: SystemFiles & { mountTable: string; fstab: string };
const ROOT_ONLY = '27 1 8:1 / / rw - ext4 /dev/sda1 rw\n';
let usbMounted: string;

beforeEach(async () => {
  dir = await makeTempDir('iau-archive-disk-');
  state = join(dir.path, 'state');
  usb = join(dir.path, 'usb');
  archive = join(usb, 'archive');
  await mkdir(state);
  await mkdir(archive, { recursive: true });
  usbMounted = `${ROOT_ONLY}70 27 8:17 / ${usb} rw - ext4 /dev/sdb1 rw\n`;
  system = { mountTable: join(dir.path, 'mountinfo'), fstab: join(dir.path, 'fstab') };
  // A disk that fstab does not list: mounted by hand, or by a desktop.
  await writeFile(system.fstab, 'UUID=1 / ext4 defaults 0 1\n');
  await writeFile(system.mountTable, usbMounted);
});
afterEach(async () => {
  await dir.remove();
});

/** The disk taken away: its folders gone with it, and its mount out of the table. */
async function unplug(): Promise<void> {
  await rm(archive, { recursive: true });
  await writeFile(system.mountTable, ROOT_ONLY);
}

describe('the archive disk remembered between runs', () => {
  it('refuses a missing archive folder whose disk, seen at an earlier start, is not mounted', async () => {
    rememberArchiveDisk(state, archive, usbMounted);
    await unplug();
    const away = await archiveDiskAway(state, archive, system);
    expect(away?.message).toBe(
      `ARCHIVE_DIRECTORY ${archive} is missing, and the disk that held it (mounted at ${usb}) is not mounted: mount it and run again; ` +
        `to archive on the disk beneath from now on, create ${archive}`,
    );
  });

  it('lets the archive be used again once the disk is back, or once the user made the folder', async () => {
    rememberArchiveDisk(state, archive, usbMounted);
    await unplug();
    await writeFile(system.mountTable, usbMounted);
    expect(await archiveDiskAway(state, archive, system)).toBeUndefined();

    await writeFile(system.mountTable, ROOT_ONLY);
    await mkdir(archive);
    expect(await archiveDiskAway(state, archive, system)).toBeUndefined();
  });

  it('lets a missing archive folder be made when its disk is there (the folder was removed), or it was never seen', async () => {
    rememberArchiveDisk(state, archive, usbMounted);
    await rm(archive, { recursive: true });
    expect(await archiveDiskAway(state, archive, system)).toBeUndefined();
    // Another archive folder than the one remembered.
    await writeFile(system.mountTable, ROOT_ONLY);
    expect(await archiveDiskAway(state, join(dir.path, 'elsewhere'), system)).toBeUndefined();
    // Nothing remembered yet: the first start.
    expect(await archiveDiskAway(join(dir.path, 'new-state'), archive, system)).toBeUndefined();
  });

  it('remembers the disk anew when the archive moved to another', async () => {
    rememberArchiveDisk(state, archive, usbMounted);
    // The archive now on the root file system (the user made the folder there): that is what is remembered.
    rememberArchiveDisk(state, archive, ROOT_ONLY);
    await unplug();
    expect(await archiveDiskAway(state, archive, system)).toBeUndefined();
  });

  it('names the fstab disk first when fstab lists it', async () => {
    await writeFile(system.fstab, `UUID=1 / ext4 defaults 0 1\nUUID=2 ${usb} ext4 defaults,nofail 0 2\n`);
    await unplug();
    expect((await archiveDiskAway(state, archive, system))?.situation).toBe(
      `ARCHIVE_DIRECTORY ${archive} is on ${usb}, which /etc/fstab mounts, but nothing is mounted there`,
    );
  });

  it('says nothing where there is no mount table (not Linux)', async () => {
    rememberArchiveDisk(state, archive, usbMounted);
    await unplug();
    expect(await archiveDiskAway(state, archive, { ...system, mountTable: join(dir.path, 'none') })).toBeUndefined();
  });
});
