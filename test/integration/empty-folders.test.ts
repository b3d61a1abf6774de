import { existsSync } from 'node:fs';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { WatchRoot } from '../../src/config.js';
import { EmptyFolders, isLeftBehind, readWaitingFolders, saveWaitingFolders } from '../../src/pipeline/empty-folders.js';
import { systemClock, type Clock } from '../../src/support/clock.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { makeTempDir } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait-for.js';

let temp: { path: string; remove: () => Promise<void> };
let root: WatchRoot;
let logLines: Array<{ level: number; msg: string; folder?: string }>;
const started: EmptyFolders[] = [];

beforeEach(async () => {
  temp = await makeTempDir('iau-empty-folders-');
  root = { path: join(temp.path, 'inbox'), archivePath: join(temp.path, 'archive') };
  await mkdir(root.path);
  logLines = [];
});

afterEach(async () => {
  for (const folders of started.splice(0)) await folders.close();
  await temp.remove();
});

function emptyFolders(graceMs: number, clock: Clock = systemClock): EmptyFolders {
  const logger = pino({ level: 'debug' }, { write: (line: string) => void logLines.push(JSON.parse(line) as (typeof logLines)[number]) });
  const folders = new EmptyFolders({ clock, logger, graceMs });
  folders.start();
  started.push(folders);
  return folders;
}

/** Writes files below the watch folder. */
async function write(...names: string[]): Promise<void> {
  for (const name of names) {
    await mkdir(join(root.path, name, '..'), { recursive: true });
    await writeFile(join(root.path, name), name);
  }
}

/** Takes a file out of the watch folder, as a move or a deletion does, and says so. */
async function takeOut(folders: EmptyFolders, name: string): Promise<void> {
  await rm(join(root.path, name));
  folders.note(join(root.path, name), root);
}

describe('EmptyFolders', () => {
  it('removes an emptied folder and each parent that leaves empty, never the watch folder', async () => {
    const folders = emptyFolders(20);
    await write('card/DCIM/100CANON/IMG_1.JPG', 'card/DCIM/100CANON/IMG_2.JPG', 'top.jpg');
    await takeOut(folders, 'card/DCIM/100CANON/IMG_1.JPG');
    await takeOut(folders, 'card/DCIM/100CANON/IMG_2.JPG');
    await takeOut(folders, 'top.jpg');
    await folders.whenIdle();
    expect(await readdir(root.path)).toEqual([]);
    expect(logLines.map((line) => [line.level, line.folder])).toEqual([
      [30, join('card', 'DCIM', '100CANON')],
      [30, join('card', 'DCIM')],
      [30, 'card'],
    ]);
  });

  it('leaves a folder that holds anything, and the parents of a folder it leaves', async () => {
    const folders = emptyFolders(20);
    await write('a/b/IMG_1.JPG', 'a/b/notes.txt', 'a/c/IMG_2.JPG', 'a/c/d/IMG_3.JPG');
    await takeOut(folders, 'a/b/IMG_1.JPG');
    await takeOut(folders, 'a/c/IMG_2.JPG');
    await folders.whenIdle();
    expect((await readdir(join(root.path, 'a'))).sort()).toEqual(['b', 'c']);
    expect(await readdir(join(root.path, 'a', 'c'))).toEqual(['d']);
    expect(logLines.filter((line) => line.level >= 30)).toEqual([]);
  });

  it("counts what file browsers and NAS indexers leave in a folder as empty, and removes it with the folder", async () => {
    const folders = emptyFolders(20);
    const leftovers = ['.DS_Store', '._IMG_1.JPG', 'Thumbs.db', 'desktop.ini', '@eaDir/IMG_1.JPG/SYNOFILE_THUMB_M.jpg'];
    await write('mac/IMG_1.JPG', ...leftovers.map((name) => `mac/${name}`), 'kept/IMG_2.JPG', 'kept/.DS_Store', 'kept/notes.txt');
    await takeOut(folders, 'mac/IMG_1.JPG');
    await takeOut(folders, 'kept/IMG_2.JPG');
    await folders.whenIdle();
    expect(await readdir(root.path)).toEqual(['kept']);
    // Beside something of the user's, nothing is removed.
    expect((await readdir(join(root.path, 'kept'))).sort()).toEqual(['.DS_Store', 'notes.txt']);
  });

  it('waits for the grace period after the last file taken out, and leaves a folder a file was put in meanwhile', async () => {
    const clock = new FakeClock({ turns: 20 });
    const folders = emptyFolders(1_000, clock);
    await write('a/IMG_1.JPG', 'a/IMG_2.JPG', 'b/IMG_3.JPG');
    await takeOut(folders, 'a/IMG_1.JPG');
    await takeOut(folders, 'b/IMG_3.JPG');
    await clock.advance(800);
    await takeOut(folders, 'a/IMG_2.JPG');
    await write('b/IMG_4.JPG'); // a new file: the folder is in use again
    await clock.advance(300);
    // `a` emptied 300 ms ago, so it is not due; `b` is, and has a file now.
    await waitFor(() => logLines.some((line) => line.folder === 'b'), { message: 'b to be tried' });
    expect(logLines).toEqual([expect.objectContaining({ level: 20, folder: 'b' })]);
    expect(existsSync(join(root.path, 'a'))).toBe(true);
    expect(existsSync(join(root.path, 'b', 'IMG_4.JPG'))).toBe(true);
    await clock.advance(800);
    await folders.whenIdle();
    expect(await readdir(root.path)).toEqual(['b']);
  });

  it('keeps to the grace period when the system time is set back', async () => {
    const clock = new FakeClock({ turns: 20 });
    const folders = emptyFolders(1_000, clock);
    await write('a/IMG_1.JPG');
    await takeOut(folders, 'a/IMG_1.JPG');
    clock.jumpWall(-3_600_000); // NTP sets the clock back an hour
    await clock.advance(1_000);
    await waitFor(() => !existsSync(join(root.path, 'a')), { message: 'a to be removed after the grace period' });
    expect(await readdir(root.path)).toEqual([]);
  });

  it('leaves what is still waiting when it is closed', async () => {
    const folders = emptyFolders(60_000);
    await write('a/IMG_1.JPG');
    await takeOut(folders, 'a/IMG_1.JPG');
    await folders.close();
    await folders.whenIdle();
    expect(await readdir(root.path)).toEqual(['a']);
  });

  it('keeps the folders still waiting at a stop for the next start, of the watch folders watched then', async () => {
    const state = join(temp.path, 'state');
    await mkdir(state);
    const first = emptyFolders(60_000);
    await write('a/IMG_1.JPG', 'b/c/IMG_2.JPG');
    await takeOut(first, 'a/IMG_1.JPG');
    await takeOut(first, 'b/c/IMG_2.JPG');
    await first.close();
    saveWaitingFolders(state, first.waiting());
    const other: WatchRoot = { path: join(temp.path, 'other'), archivePath: root.archivePath };
    expect(readWaitingFolders(state, [other])).toEqual([]);
    const waiting = readWaitingFolders(state, [other, root]);
    expect(waiting).toEqual([
      { folder: join(root.path, 'a'), root },
      { folder: join(root.path, 'b', 'c'), root },
    ]);
    const next = emptyFolders(20);
    for (const { folder, root: of } of waiting) next.noteFolder(folder, of);
    await next.whenIdle();
    expect(await readdir(root.path)).toEqual([]);
  });

  it('starts with no folder waiting when the state file is missing, unreadable or of another shape', async () => {
    const state = join(temp.path, 'state');
    await mkdir(state);
    expect(readWaitingFolders(state, [root])).toEqual([]);
    await writeFile(join(state, 'emptied-folders.json'), '{"folders": [');
    expect(readWaitingFolders(state, [root])).toEqual([]);
    await writeFile(join(state, 'emptied-folders.json'), JSON.stringify({ folders: [null, 3, { folder: root.path, root: root.path }, { folder: temp.path, root: root.path }] }));
    expect(readWaitingFolders(state, [root])).toEqual([]);
  });
});

describe('isLeftBehind', () => {
  it.each(['.DS_Store', '.ds_store', '._IMG_1.JPG', 'Thumbs.db', 'THUMBS.DB', 'ehthumbs.db', 'desktop.ini', '@eaDir'])('%s is', (name) => {
    expect(isLeftBehind(name)).toBe(true);
  });
  it.each(['IMG_1.JPG', 'notes.txt', '.stfolder', '#recycle', '$RECYCLE.BIN', 'lost+found', 'DS_Store', '_IMG_1.JPG'])('%s is not', (name) => {
    expect(isLeftBehind(name)).toBe(false);
  });
});
