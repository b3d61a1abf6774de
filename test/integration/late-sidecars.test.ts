import { existsSync } from 'node:fs';
import { mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { WatchRoot } from '../../src/config.js';
import { Journal, type FileRow, type FileState } from '../../src/journal/journal.js';
import { nodeArchiveFs, type ArchiveFs } from '../../src/pipeline/archive.js';
import { judgeLateSidecar, LATE_SIDECAR_WINDOW_MS, LateSidecars, type LateSidecarVerdict } from '../../src/pipeline/late-sidecars.js';
import { systemClock } from '../../src/support/clock.js';
import { readIfExists, writeMedia } from '../helpers/media.js';
import { makeTempDir } from '../helpers/temp-dir.js';

describe('judgeLateSidecar', () => {
  const NOW = 1_800_000_000_000;
  const HOUR = 60 * 60_000;

  function row(path: string, state: FileState, ageMs = HOUR, archivePath: string | null = state === 'archived' ? `/a${path}` : null): FileRow {
    return {
      ...{ id: 1, path, size: 1, mtimeMs: 1, checksum: null, state, assetId: null, serverStatus: null, archivePath },
      ...{ error: null, attempts: 0, nextRetryAt: null, createdAt: NOW - ageMs, updatedAt: NOW - ageMs },
    };
  }

  /** The verdict, and whether the folder was listed for it. */
  async function judge(
    sidecar: string,
    rows: FileRow[],
    options: { siblings?: string[]; mode?: 'move' | 'delete' } = {},
  ): Promise<{ verdict: LateSidecarVerdict; listed: boolean }> {
    let listed = false;
    const verdict = await judgeLateSidecar(sidecar, rows, NOW, options.mode ?? 'move', async () => {
      listed = true;
      return options.siblings ?? [];
    });
    return { verdict, listed };
  }

  it("follows its photo's archived name, whichever of its two names it has", async () => {
    expect((await judge('/w/IMG_1.JPG.xmp', [row('/w/IMG_1.JPG', 'archived', HOUR, '/a/IMG_1 (1).JPG')])).verdict).toEqual({
      kind: 'follow',
      photo: '/w/IMG_1.JPG',
      archivedTo: '/a/IMG_1 (1).JPG',
    });
    // A stem sidecar follows the file of its stem that went last (the journal lists it first).
    const rows = [row('/w/IMG_2.MOV', 'archived', HOUR), row('/w/IMG_2.HEIC', 'archived', 2 * HOUR)];
    expect((await judge('/w/IMG_2.XMP', rows)).verdict).toMatchObject({ kind: 'follow', photo: '/w/IMG_2.MOV', archivedTo: '/a/w/IMG_2.MOV' });
  });

  it('waits while a photo of it is in the folder or on its way, and lists the folder only when one went', async () => {
    expect(await judge('/w/IMG_1.jpg.xmp', [row('/w/IMG_1.jpg', 'uploading')])).toEqual({ verdict: { kind: 'wait' }, listed: false });
    // The photo went, and a new one of the name (any case) is there now: it takes the sidecar.
    for (const sibling of ['img_1.JPG', 'IMG_1.jpg.mov', 'IMG_1.jpg.part']) {
      expect(await judge('/w/IMG_1.jpg.xmp', [row('/w/IMG_1.jpg', 'archived')], { siblings: ['IMG_1.jpg.xmp', sibling] })).toEqual({
        verdict: { kind: 'wait' },
        listed: true,
      });
    }
    const others = ['IMG_1.jpg.xmp', 'IMG_1.JPG.XMP', 'IMG_10.jpg', 'IMG_1 (1).jpg', 'IMG_1.xmp'];
    expect((await judge('/w/IMG_1.jpg.xmp', [row('/w/IMG_1.jpg', 'archived')], { siblings: others })).verdict.kind).toBe('follow');
  });

  it('leaves alone a sidecar no photo of which went within the window', async () => {
    expect(await judge('/w/IMG_1.xmp', [])).toEqual({ verdict: { kind: 'none' }, listed: false });
    // Ten thousand shots later the camera's counter is back at IMG_0001: that photo is not this sidecar's.
    expect(await judge('/w/IMG_1.xmp', [row('/w/IMG_1.jpg', 'archived', LATE_SIDECAR_WINDOW_MS + 1)])).toEqual({
      verdict: { kind: 'none' },
      listed: false,
    });
    expect((await judge('/w/IMG_1.xmp', [row('/w/IMG_1.jpg', 'archived', LATE_SIDECAR_WINDOW_MS)])).verdict.kind).toBe('follow');
    for (const state of ['kept', 'skipped', 'failed', 'gone'] as const) {
      expect((await judge('/w/IMG_1.xmp', [row('/w/IMG_1.jpg', state)])).verdict, state).toEqual({ kind: 'none' });
    }
    // Rows of other files that share the start of its name are not its photos.
    const strangers = [row('/w/IMG_1.jpg.mov', 'archived'), row('/w/IMG_1 (1).jpg', 'uploading'), row('/w/IMG_1.d/a.jpg', 'archived')];
    expect((await judge('/w/IMG_1.xmp', strangers)).verdict).toEqual({ kind: 'none' });
  });

  it('stays when its photo went to the server and not to the archive', async () => {
    expect((await judge('/w/IMG_1.xmp', [row('/w/IMG_1.jpg', 'deleted')])).verdict).toEqual({ kind: 'stays', photo: '/w/IMG_1.jpg' });
    expect((await judge('/w/IMG_1.xmp', [row('/w/IMG_1.jpg', 'deleted')], { mode: 'delete' })).verdict.kind).toBe('stays');
    // Archived under an earlier setting: delete mode moves nothing.
    expect((await judge('/w/IMG_1.xmp', [row('/w/IMG_1.jpg', 'archived')], { mode: 'delete' })).verdict.kind).toBe('stays');
  });
});

describe('LateSidecars', () => {
  let temp: { path: string; remove: () => Promise<void> };
  let root: WatchRoot;
  let journal: Journal;
  let logLines: Array<{ level: number; msg: string; [key: string]: unknown }>;
  let logger: Logger;
  const started: LateSidecars[] = [];

  beforeEach(async () => {
    temp = await makeTempDir('iau-late-sidecars-');
    root = { path: join(temp.path, 'inbox'), archivePath: join(temp.path, 'archive') };
    await mkdir(root.path);
    logLines = [];
    logger = pino({ level: 'debug' }, { write: (line: string) => logLines.push(JSON.parse(line) as (typeof logLines)[number]) });
    journal = Journal.open({ directory: join(temp.path, 'state'), logger });
  });

  afterEach(async () => {
    for (const late of started.splice(0)) await late.close();
    journal.close();
    await temp.remove();
  });

  function lateSidecars(afterUpload: 'move' | 'delete', fs: ArchiveFs = nodeArchiveFs): LateSidecars {
    const late = new LateSidecars({
      clock: systemClock,
      logger,
      waitMs: 0,
      intervalMs: 10,
      afterUpload,
      rowsWithStem: (stem) => journal.latestWithStem(stem),
      fs,
      archiveDirectory: root.archivePath,
      display: (file) => file.path.slice(root.path.length + 1),
    });
    late.start();
    started.push(late);
    return late;
  }

  /** Records steps of a photo's way, as the pipeline does; `archived` names its archived copy. */
  function record(name: string, steps: readonly FileState[], archivedAs = name): void {
    const file = { path: join(root.path, name), size: 10, mtimeMs: 1 };
    for (const state of steps) journal.record(file, state, state === 'archived' ? { archivePath: join(root.archivePath, archivedAs) } : {});
  }

  /** Records a photo's whole way to `to`. */
  function went(name: string, to: 'archived' | 'deleted' | 'uploading', archivedAs?: string): void {
    const steps: FileState[] = ['discovered', 'settled', 'hashed', 'uploading'];
    if (to !== 'uploading') steps.push('on-server', to === 'archived' ? 'archiving' : 'deleting', to);
    record(name, steps, archivedAs);
  }

  /** Offers a file of the watch folder as the detector would, and waits until it is judged. */
  async function offer(late: LateSidecars, name: string): Promise<void> {
    const path = join(root.path, name);
    const info = await stat(path);
    late.offer({ path, root, size: info.size, mtimeMs: info.mtimeMs });
    await late.whenIdle();
  }

  const warnings = (): string[] => logLines.filter((line) => line.level === 40).map((line) => line.msg);

  it("moves one into the archive after its photo, named after the photo's archived name, with a warning", async () => {
    const late = lateSidecars('move');
    await writeMedia(root.archivePath, ['IMG_1.jpg', 'IMG_1 (1).jpg', 'IMG_2.HEIC']);
    went('IMG_1.jpg', 'archived', 'IMG_1 (1).jpg');
    went('IMG_2.HEIC', 'archived');
    const sidecars = await writeMedia(root.path, ['IMG_1.jpg.xmp', 'IMG_2.xmp'], 300);
    await offer(late, 'IMG_1.jpg.xmp');
    await offer(late, 'IMG_2.xmp');
    expect(await readdir(root.path)).toEqual([]);
    expect(await readIfExists(join(root.archivePath, 'IMG_1 (1).jpg.xmp'))).toEqual(sidecars.get('IMG_1.jpg.xmp'));
    expect(await readIfExists(join(root.archivePath, 'IMG_2.xmp'))).toEqual(sidecars.get('IMG_2.xmp'));
    expect(warnings()).toEqual([
      `IMG_1.jpg.xmp arrived after IMG_1.jpg went to the server, so Immich did not get it (Immich takes a sidecar only with a new upload of its photo): moved into the archive beside the photo, as ${join(root.archivePath, 'IMG_1 (1).jpg.xmp')}`,
      expect.stringMatching(/^IMG_2\.xmp arrived after IMG_2\.HEIC went to the server.*as .*IMG_2\.xmp$/),
    ]);
  });

  it('leaves one whose photo was archived outside ARCHIVE_DIRECTORY as it is now (changed since, or a disk taken away)', async () => {
    const late = lateSidecars('move');
    const earlier = join(temp.path, 'usb', 'archive');
    const file = { path: join(root.path, 'IMG_1.jpg'), size: 10, mtimeMs: 1 };
    for (const state of ['discovered', 'settled', 'hashed', 'uploading', 'on-server', 'archiving'] as const) journal.record(file, state);
    journal.record(file, 'archived', { archivePath: join(earlier, 'IMG_1.jpg') });
    await writeMedia(root.path, ['IMG_1.jpg.xmp'], 300);
    await offer(late, 'IMG_1.jpg.xmp');
    expect(await readdir(root.path)).toEqual(['IMG_1.jpg.xmp']);
    expect(existsSync(earlier), 'nothing made where the old archive was').toBe(false);
    expect(warnings()).toEqual([
      `IMG_1.jpg.xmp arrived after IMG_1.jpg went to the server, so Immich did not get it (Immich takes a sidecar only with a new upload of its photo): it stays here, since its photo was archived to ${join(earlier, 'IMG_1.jpg')}, outside ARCHIVE_DIRECTORY as it is now`,
    ]);
  });

  it('never moves one over another file in the archive', async () => {
    const late = lateSidecars('move');
    went('IMG_1.jpg', 'archived');
    const other = await writeMedia(root.archivePath, ['IMG_1.jpg.xmp'], 200);
    const sidecar = await writeMedia(root.path, ['IMG_1.jpg.xmp'], 300);
    await offer(late, 'IMG_1.jpg.xmp');
    expect(await readIfExists(join(root.archivePath, 'IMG_1.jpg.xmp'))).toEqual(other.get('IMG_1.jpg.xmp'));
    expect(await readIfExists(join(root.archivePath, 'IMG_1.jpg (1).xmp'))).toEqual(sidecar.get('IMG_1.jpg.xmp'));
    expect(existsSync(join(root.path, 'IMG_1.jpg.xmp'))).toBe(false);
  });

  it('leaves one whose photo is still on its way, and moves it at a sighting after the photo went', async () => {
    const late = lateSidecars('move');
    went('IMG_1.jpg', 'uploading');
    await writeMedia(root.path, ['IMG_1.jpg.xmp'], 300);
    await offer(late, 'IMG_1.jpg.xmp');
    expect(await readdir(root.path)).toEqual(['IMG_1.jpg.xmp']);
    expect(logLines.filter((line) => line.level >= 40)).toEqual([]);
    record('IMG_1.jpg', ['on-server', 'archiving', 'archived']);
    await offer(late, 'IMG_1.jpg.xmp');
    expect(await readdir(root.path)).toEqual([]);
    expect(existsSync(join(root.archivePath, 'IMG_1.jpg.xmp'))).toBe(true);
  });

  it('judges one that waited for its photo again as soon as the photo goes', async () => {
    const late = lateSidecars('move');
    went('IMG_1.jpg', 'uploading');
    await writeMedia(root.path, ['IMG_1.jpg.xmp', 'IMG_2.xmp'], 300);
    await offer(late, 'IMG_1.jpg.xmp');
    late.photoGone(join(root.path, 'IMG_1.jpg')); // not yet recorded as gone: it waits again
    await late.whenIdle();
    expect(await readdir(root.path)).toEqual(['IMG_1.jpg.xmp', 'IMG_2.xmp']);
    record('IMG_1.jpg', ['on-server', 'archiving', 'archived']);
    late.photoGone(join(root.path, 'IMG_2.jpg')); // another photo: nothing of it waits
    late.photoGone(join(root.path, 'IMG_1.jpg'));
    expect(late.pending).toBe(1);
    await late.whenIdle();
    expect(await readdir(root.path)).toEqual(['IMG_2.xmp']);
    expect(existsSync(join(root.archivePath, 'IMG_1.jpg.xmp'))).toBe(true);
  });

  it('delete mode: leaves one whose photo was deleted, with one warning however often it is seen', async () => {
    const late = lateSidecars('delete');
    went('IMG_1.jpg', 'deleted');
    await writeMedia(root.path, ['IMG_1.jpg.xmp'], 300);
    await offer(late, 'IMG_1.jpg.xmp');
    await offer(late, 'IMG_1.jpg.xmp');
    expect(await readdir(root.path)).toEqual(['IMG_1.jpg.xmp']);
    expect(warnings()).toEqual([
      'IMG_1.jpg.xmp arrived after IMG_1.jpg went to the server, so Immich did not get it (Immich takes a sidecar only with a new upload of its photo): it stays here, since what it holds is nowhere else',
    ]);
    // A new version is news.
    await writeFile(join(root.path, 'IMG_1.jpg.xmp'), 'edited again');
    await offer(late, 'IMG_1.jpg.xmp');
    expect(warnings()).toHaveLength(2);
  });

  it('delete mode: says of one whose photo was on the server already that it did not go with it, not that it arrived after', async () => {
    const late = lateSidecars('delete');
    const file = { path: join(root.path, 'IMG_1.jpg'), size: 10, mtimeMs: 1 };
    for (const state of ['discovered', 'settled', 'hashed'] as const) journal.record(file, state);
    journal.record(file, 'on-server', { assetId: 'a1', serverStatus: 'duplicate' });
    journal.record(file, 'deleting');
    journal.record(file, 'deleted');
    await writeMedia(root.path, ['IMG_1.jpg.xmp'], 300);
    await offer(late, 'IMG_1.jpg.xmp');
    expect(await readdir(root.path)).toEqual(['IMG_1.jpg.xmp']);
    expect(warnings()).toEqual([
      'IMG_1.jpg.xmp stays here: IMG_1.jpg was on the server already, so this sidecar did not go with it (Immich takes a sidecar only with a new upload of its photo), and what it holds may be nowhere else',
    ]);
  });

  it('says nothing of one that went or changed while it was judged', async () => {
    // The listing (made only for a sidecar whose photo went) is where the photo's own pass, or a
    // writer, gets in.
    let meanwhile = async (): Promise<void> => undefined;
    const late = lateSidecars('move', { ...nodeArchiveFs, readdir: async (path) => (await meanwhile(), nodeArchiveFs.readdir(path)) });
    went('IMG_1.jpg', 'archived');
    went('IMG_2.jpg', 'archived');
    await writeMedia(root.path, ['IMG_1.jpg.xmp', 'IMG_2.jpg.xmp'], 300);
    meanwhile = () => rm(join(root.path, 'IMG_1.jpg.xmp'));
    await offer(late, 'IMG_1.jpg.xmp');
    meanwhile = () => writeFile(join(root.path, 'IMG_2.jpg.xmp'), 'still being written');
    await offer(late, 'IMG_2.jpg.xmp');
    expect(logLines.filter((line) => line.level >= 40)).toEqual([]);
    expect(await readdir(root.path)).toEqual(['IMG_2.jpg.xmp']);
    expect(existsSync(join(root.archivePath, 'IMG_2.jpg.xmp'))).toBe(false);
  });

  it('leaves one that cannot be moved, with one warning until it is tried again', async () => {
    const late = lateSidecars('move');
    went('IMG_1.jpg', 'archived', 'blocked/IMG_1.jpg');
    await writeFile(join(temp.path, 'archive'), 'a file where the archive folder should be');
    await writeMedia(root.path, ['IMG_1.jpg.xmp'], 300);
    await offer(late, 'IMG_1.jpg.xmp');
    await offer(late, 'IMG_1.jpg.xmp');
    expect(await readdir(root.path)).toEqual(['IMG_1.jpg.xmp']);
    expect(warnings()).toEqual([expect.stringMatching(/^IMG_1\.jpg\.xmp arrived after its photo went to the server, and could not follow it into the archive: /)]);
  });
});
