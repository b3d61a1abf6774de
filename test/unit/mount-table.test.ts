import { describe, expect, it } from 'vitest';
import {
  changedMountPoints,
  foldersToWalk,
  fstabMountPoints,
  MountTable,
  mountsOf,
  mountPointOf,
  networkFileSystemOf,
  readMountTable,
  unmountedMountPointOf,
} from '../../src/support/mount-table.js';
import { FakeClock } from '../helpers/fake-clock.js';

const TABLE = [
  '22 27 0:21 / /proc rw,relatime - proc proc rw',
  '27 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw',
  '40 27 8:17 / /media/pi/EOS_DIGITAL rw,nosuid,nodev - vfat /dev/sdb1 rw,uid=1000',
  '41 27 8:33 / /media/pi/My\\040Card rw - exfat /dev/sdc1 rw',
  '',
].join('\n');

describe('mountsOf', () => {
  it('reads each mount as its ID and mount point, with escaped spaces undone', () => {
    expect([...mountsOf(TABLE)]).toEqual(['22 /proc', '27 /', '40 /media/pi/EOS_DIGITAL', '41 /media/pi/My Card']);
  });

  it('undoes the escapes of tabs, newlines and backslashes too', () => {
    expect([...mountsOf('50 27 8:1 / /srv/a\\011b\\012c\\134d rw - ext4 /dev/sdd1 rw')]).toEqual(['50 /srv/a\tb\nc\\d']);
  });
});

describe('changedMountPoints', () => {
  const before = mountsOf(TABLE);

  it('names the points of mounts added and removed', () => {
    const after = mountsOf(
      TABLE.replace('41 27 8:33 / /media/pi/My\\040Card rw - exfat /dev/sdc1 rw\n', '') + '42 27 8:49 / /srv/inbox/card rw - vfat /dev/sdd1 rw\n',
    );
    expect(changedMountPoints(before, after).sort()).toEqual(['/media/pi/My Card', '/srv/inbox/card']);
  });

  it('counts a card taken out and put back in (a new mount ID) as a change, a remount with other options not', () => {
    const reinserted = mountsOf(TABLE.replace('40 27 8:17 / /media/pi/EOS_DIGITAL', '43 27 8:17 / /media/pi/EOS_DIGITAL'));
    expect(changedMountPoints(before, reinserted)).toEqual(['/media/pi/EOS_DIGITAL']);
    const readOnly = mountsOf(TABLE.replace('/media/pi/EOS_DIGITAL rw,nosuid', '/media/pi/EOS_DIGITAL ro,nosuid'));
    expect(changedMountPoints(before, readOnly)).toEqual([]);
  });
});

describe('foldersToWalk', () => {
  const inbox = { path: '/srv/inbox' };
  const dcim = { path: '/media/pi/EOS_DIGITAL/DCIM' };
  const roots = [inbox, dcim];

  it('walks a mount point inside a watch folder, at any depth when recursive', () => {
    expect(foldersToWalk(['/srv/inbox/card', '/srv/inbox/a/b'], roots, true)).toEqual([
      { folder: '/srv/inbox/card', root: inbox },
      { folder: '/srv/inbox/a/b', root: inbox },
    ]);
    expect(foldersToWalk(['/srv/inbox/card'], roots, false)).toEqual([]);
  });

  it('walks the whole watch folder when the mount is the folder itself or holds it', () => {
    expect(foldersToWalk(['/srv/inbox'], roots, false)).toEqual([{ folder: '/srv/inbox', root: inbox }]);
    expect(foldersToWalk(['/media/pi/EOS_DIGITAL', '/media/pi/EOS_DIGITAL/DCIM/x'], roots, true)).toEqual([
      { folder: '/media/pi/EOS_DIGITAL/DCIM', root: dcim },
    ]);
  });

  it('leaves out mounts elsewhere, and folders that only share the start of a name', () => {
    expect(foldersToWalk(['/var/lib/docker/overlay2/x/merged', '/srv/inbox2', '/srv/in'], roots, true)).toEqual([]);
  });
});

describe('readMountTable', () => {
  it('is undefined where there is no table', async () => {
    expect(await readMountTable('/nonexistent/mountinfo')).toBeUndefined();
  });
});

describe('MountTable', () => {
  it('reports the points that changed at each reading, nothing for a reading that failed or changed nothing', async () => {
    const clock = new FakeClock();
    const readings: (string | undefined)[] = [
      TABLE,
      TABLE, // unchanged
      undefined, // failed
      TABLE + '42 27 8:49 / /srv/inbox/card rw - vfat /dev/sdd1 rw\n',
      TABLE,
    ];
    const changes: string[][] = [];
    const table = await MountTable.follow({
      read: async () => readings.shift(),
      clock,
      intervalMs: 2_000,
      onChange: (points) => changes.push(points),
    });
    for (let i = 0; i < 4; i += 1) await clock.advance(2_000);
    expect(changes).toEqual([['/srv/inbox/card'], ['/srv/inbox/card']]);
    await table?.close();
  });

  it('is not followed where there is no table', async () => {
    const table = await MountTable.follow({ read: async () => undefined, clock: new FakeClock(), intervalMs: 2_000, onChange: () => undefined });
    expect(table).toBeUndefined();
  });
});

describe('networkFileSystemOf', () => {
  const table = [
    '27 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw',
    '60 27 0:50 / /mnt/nas rw,relatime shared:30 - nfs4 nas:/volume1/photos rw,vers=4.2',
    '61 60 8:17 / /mnt/nas/usb rw - vfat /dev/sdb1 rw',
    '62 27 0:51 / /srv/My\\040Share rw - cifs //nas/share rw',
    '63 27 0:52 / /srv/local rw - cifs //nas/old rw',
    '64 27 8:2 / /srv/local rw - ext4 /dev/sda2 rw',
    '',
  ].join('\n');

  it('names the network file system holding a folder, from the innermost mount', () => {
    expect(networkFileSystemOf(table, '/mnt/nas')).toBe('nfs4');
    expect(networkFileSystemOf(table, '/mnt/nas/inbox/2024')).toBe('nfs4');
    expect(networkFileSystemOf(table, '/srv/My Share/inbox')).toBe('cifs');
  });

  it('is undefined on a local disk: the root, a disk mounted inside a share, the top of mounts stacked at one point', () => {
    expect(networkFileSystemOf(table, '/home/pi/inbox')).toBeUndefined();
    expect(networkFileSystemOf(table, '/mnt/nas/usb/DCIM')).toBeUndefined();
    expect(networkFileSystemOf(table, '/mnt/nasty')).toBeUndefined();
    expect(networkFileSystemOf(table, '/srv/local/inbox')).toBeUndefined();
  });

  it('shares its choice of mount with mountPointOf', () => {
    expect(mountPointOf(table, '/home/pi/inbox')).toBe('/');
    expect(mountPointOf(table, '/mnt/nas/usb/DCIM')).toBe('/mnt/nas/usb');
    expect(mountPointOf(table, '/srv/My Share')).toBe('/srv/My Share');
    expect(mountPointOf('', '/srv')).toBeUndefined();
  });
});

describe('fstab', () => {
  const fstab = [
    '# <file system> <mount point> <type> <options> <dump> <pass>',
    'UUID=1234-abcd  /               ext4  defaults          0 1',
    'UUID=5678-ef01  /mnt/usb        ext4  defaults,nofail   0 2',
    'LABEL=photos    /mnt/usb/photos\\040disk  exfat  nofail  0 0',
    '/swapfile       none            swap  sw                0 0',
    '',
    '   # an indented comment',
  ].join('\n');

  it('lists the mount points, with escaped spaces undone, without swap and comments', () => {
    expect(fstabMountPoints(fstab)).toEqual(['/', '/mnt/usb', '/mnt/usb/photos disk']);
  });

  it('names the innermost mount point that fstab lists for a folder when nothing is mounted there', () => {
    const rootOnly = '27 1 8:1 / / rw - ext4 /dev/sda1 rw\n';
    const usbMounted = rootOnly + '70 27 8:17 / /mnt/usb rw - ext4 /dev/sdb1 rw\n';
    expect(unmountedMountPointOf('/mnt/usb/archive', fstab, rootOnly)).toBe('/mnt/usb');
    expect(unmountedMountPointOf('/mnt/usb/archive', fstab, usbMounted)).toBeUndefined();
    expect(unmountedMountPointOf('/mnt/usb/photos disk/archive', fstab, usbMounted)).toBe('/mnt/usb/photos disk');
    expect(unmountedMountPointOf('/home/pi/Pictures/Archived', fstab, rootOnly)).toBeUndefined();
    expect(unmountedMountPointOf('/mnt/usb2/archive', fstab, rootOnly)).toBeUndefined();
  });
});
