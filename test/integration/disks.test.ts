import { statSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { ArchiveFull, ArchiveMount, archiveDiskAway, notedDiskAway, notMountedError, readAwayDisks, rememberDisk } from '../../src/pipeline/disks.js';
import type { FileOutcome } from '../../src/pipeline/process-file.js';
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
  dir = await makeTempDir('iau-disks-');
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
  it('refuses the archive when nothing is mounted where its disk was at an earlier start, saying how to go on without it', async () => {
    expect(rememberDisk(state, archive, usbMounted)).toBe(usb);
    await unplug();
    const away = await archiveDiskAway(state, archive, system);
    expect(away?.message).toBe(
      `ARCHIVE_DIRECTORY ${archive} was on the disk mounted at ${usb} when the uploader last started, and nothing is mounted there now: ` +
        `mount it and run again; to go on without that disk from now on, remove ${join(state, 'disks.json')}`,
    );
    // The folder made again on the disk beneath changes nothing: the disk is still away.
    await mkdir(archive, { recursive: true });
    expect(await archiveDiskAway(state, archive, system)).toBeDefined();
  });

  it('lets the archive be used again once the disk is back, or once the note is removed', async () => {
    rememberDisk(state, archive, usbMounted);
    await unplug();
    await writeFile(system.mountTable, usbMounted);
    expect(await archiveDiskAway(state, archive, system)).toBeUndefined();

    await writeFile(system.mountTable, ROOT_ONLY);
    await rm(join(state, 'disks.json'));
    expect(await archiveDiskAway(state, archive, system)).toBeUndefined();
  });

  it('says nothing of another archive folder than the one noted, nor before the first note', async () => {
    rememberDisk(state, archive, usbMounted);
    await unplug();
    expect(await archiveDiskAway(state, join(dir.path, 'elsewhere'), system)).toBeUndefined();
    expect(await archiveDiskAway(join(dir.path, 'new-state'), archive, system)).toBeUndefined();
  });

  it('notes the disk anew when the archive is on another one', async () => {
    rememberDisk(state, archive, usbMounted);
    expect(rememberDisk(state, archive, ROOT_ONLY)).toBe('/');
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
    rememberDisk(state, archive, usbMounted);
    await unplug();
    expect(await archiveDiskAway(state, archive, { ...system, mountTable: join(dir.path, 'none') })).toBeUndefined();
  });
});

describe('the disks of the watch folders, noted likewise', () => {
  it('keeps a note per folder, and names a noted disk that is away, fstab first', async () => {
    const stick = join(usb, 'photos');
    const home = join(dir.path, 'home', 'inbox');
    expect(rememberDisk(state, stick, usbMounted)).toBe(usb);
    expect(rememberDisk(state, home, usbMounted)).toBe('/');
    expect(notedDiskAway(state, stick, usbMounted)).toBeUndefined();
    expect(notedDiskAway(state, stick, ROOT_ONLY)).toBe(usb);
    expect(notedDiskAway(state, home, ROOT_ONLY)).toBeUndefined();

    await writeFile(system.mountTable, ROOT_ONLY);
    const away = await readAwayDisks(system, state);
    expect(away(stick)).toEqual({ point: usb, noted: true });
    expect(away(home)).toBeUndefined();
    expect(notMountedError('WATCH_DIRECTORIES', stick, { point: usb, noted: true }, state).situation).toBe(
      `WATCH_DIRECTORIES ${stick} was on the disk mounted at ${usb} when the uploader last started, and nothing is mounted there now`,
    );
    // Without a state folder to read, only fstab counts.
    expect((await readAwayDisks(system, undefined))(stick)).toBeUndefined();
    await writeFile(system.fstab, `UUID=1 / ext4 defaults 0 1\nUUID=2 ${usb} ext4 defaults,nofail 0 2\n`);
    expect((await readAwayDisks(system, state))(stick)).toEqual({ point: usb, noted: false });
  });
});

describe('ArchiveMount', () => {
  it('says when the disk of the archive went and came back, once each', () => {
    const mount = new ArchiveMount(archive, usb);
    expect(mount.gone).toBeUndefined();
    expect(mount.update(usbMounted)).toBeUndefined();
    expect(mount.update(ROOT_ONLY)).toBe('gone');
    expect(mount.update(ROOT_ONLY)).toBeUndefined();
    expect(mount.gone).toBe(
      `The disk of the archive folder ${archive} (mounted at ${usb}) is gone. Nothing is uploaded or archived until it is ` +
        'mounted again, and nothing is put on the disk beneath: the files wait in the watch folder',
    );
    expect(mount.update(usbMounted)).toBe('back');
    expect(mount.gone).toBeUndefined();
  });

  it('holds the files that wait for the disk until it is back, or until they are stopped', async () => {
    const mount = new ArchiveMount(archive, usb);
    const stop = new AbortController();
    expect(await mount.whenThere(stop.signal)).toBe(true);
    mount.update(ROOT_ONLY);
    let settled: boolean | undefined;
    const waiting = mount.whenThere(stop.signal).then((there) => (settled = there));
    const stopped = new AbortController();
    const abandoned = mount.whenThere(stopped.signal);
    await new Promise((resolve) => setImmediate(resolve));
    expect(settled).toBeUndefined();
    stopped.abort();
    expect(await abandoned).toBe(false);
    // Another change that leaves the disk away wakes nobody for good.
    mount.update(ROOT_ONLY);
    await new Promise((resolve) => setImmediate(resolve));
    expect(settled).toBeUndefined();
    mount.update(usbMounted);
    expect(await waiting).toBe(true);
  });

  it('never calls the root file system gone', () => {
    const mount = new ArchiveMount(archive, '/');
    expect(mount.update('')).toBeUndefined();
    expect(mount.gone).toBeUndefined();
    expect(mount.device).toBeUndefined();
  });

  it("knows the archive folder's device where it has a disk of its own, and reads it again when the disk is back", async () => {
    await mkdir(archive, { recursive: true });
    const mount = new ArchiveMount(archive, usb);
    expect(mount.device).toBe(statSync(archive).dev);
    mount.update(ROOT_ONLY);
    await rm(archive, { recursive: true });
    mount.update(usbMounted);
    // Not there to be read: nothing to compare with (the archive's own checks then say why).
    expect(mount.device).toBeUndefined();
  });
});

describe('ArchiveFull', () => {
  it('makes a full archive disk a problem, said once when it begins and once when a file is archived again', () => {
    const told: string[] = [];
    const lines: Array<{ level: number; msg: string }> = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as (typeof lines)[number]) });
    const full = new ArchiveFull({
      problems: { raise: (kind) => void told.push(`raise ${kind}`), clear: (kind) => void told.push(`clear ${kind}`) },
      logger,
      archiveDirectory: '/srv/uploaded',
    });
    const refused: FileOutcome = { kind: 'failed', stage: 'archive', message: 'archive failed ...', retryable: true, code: 'ENOSPC' };
    full.saw(refused);
    full.saw(refused);
    // Another file's own trouble, or an upload that fails: not the disk's.
    full.saw({ kind: 'failed', stage: 'archive', message: 'archive failed ...', retryable: true, code: 'EACCES' });
    full.saw({ kind: 'failed', stage: 'upload', message: 'answered 500', retryable: true });
    full.saw({ kind: 'uploaded', assetId: 'a', disposition: { mode: 'move', archivedTo: '/srv/uploaded/a.jpg' }, ms: 1 });
    full.saw({ kind: 'uploaded', assetId: 'b', disposition: { mode: 'move', archivedTo: '/srv/uploaded/b.jpg' }, ms: 1 });
    expect(told).toEqual(['raise archive-full', 'clear archive-full']);
    expect(lines.map((line) => [line.level, line.msg])).toEqual([
      [40, 'the disk of ARCHIVE_DIRECTORY /srv/uploaded is full (ENOSPC): uploaded files stay in the watch folder until it takes them (fix: free space on it)'],
      [30, 'the archive takes files again'],
    ]);
  });
});
