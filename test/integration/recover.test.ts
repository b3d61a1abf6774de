import { execFileSync } from 'node:child_process';
import { link, mkdir, readdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { WatchRoot } from '../../src/config.js';
import { forgetVanishedFailures, recoverUnfinished, type UnfinishedRow } from '../../src/pipeline/recover.js';
import { makeRecorder, type FileState, type RecordDetails } from '../../src/pipeline/states.js';
import { readIfExists, sha1, writeMedia } from '../helpers/media.js';
import { makeTempDir } from '../helpers/temp-dir.js';

let temp: { path: string; remove: () => Promise<void> };
let root: WatchRoot;
let recorded: { path: string; state: FileState; details?: RecordDetails }[];

beforeEach(async () => {
  temp = await makeTempDir('iau-recover-');
  root = { path: join(temp.path, 'in'), archivePath: join(temp.path, 'archive') };
  await mkdir(root.path);
  await mkdir(root.archivePath);
  recorded = [];
});

afterEach(async () => {
  await temp.remove();
});

/** `sidecar`: the name of the sidecar recorded as sent with it, as it is now. */
async function rowFor(name: string, state: FileState, bytes: Buffer, sidecar?: string): Promise<UnfinishedRow> {
  const path = join(root.path, name);
  const info = await stat(path);
  const row: UnfinishedRow = { path, size: info.size, mtimeMs: info.mtimeMs, state, checksum: sha1(bytes) };
  if (sidecar !== undefined) {
    const sent = await stat(join(root.path, sidecar));
    row.sidecar = { path: join(root.path, sidecar), size: sent.size, mtimeMs: sent.mtimeMs };
  }
  return row;
}

/** What recovery logged, by message. */
let said: string[];

function recover(rows: UnfinishedRow[], afterUpload: 'move' | 'delete' | 'keep' = 'move') {
  said = [];
  return recoverUnfinished({
    rows,
    roots: [root],
    afterUpload,
    logger: pino({ level: 'info' }, { write: (line: string) => void said.push((JSON.parse(line) as { msg: string }).msg) }),
    // Every state is "committed" at once; a write-ahead caller gets a resolved promise.
    record: async (file, state, details) => void recorded.push({ path: file.path, state, details }),
  });
}

describe('recoverUnfinished', () => {
  it('finishes a move that was linked but whose source was not yet removed', async () => {
    const files = await writeMedia(root.path, ['a.jpg']);
    const bytes = files.get('a.jpg') ?? Buffer.alloc(0);
    const row = await rowFor('a.jpg', 'archiving', bytes);
    await link(row.path, join(root.archivePath, 'a.jpg'));
    const summary = await recover([row]);
    expect(summary).toEqual({ finished: 1, resumed: 0, gone: 0, unwatched: 0 });
    expect(await readIfExists(row.path)).toBeUndefined();
    expect(sha1((await readIfExists(join(root.archivePath, 'a.jpg'))) ?? Buffer.alloc(0))).toBe(sha1(bytes));
    expect(recorded.at(-1)).toMatchObject({ state: 'archived', details: { archivePath: join(root.archivePath, 'a.jpg') } });
    // Its own line, as in a run, then the summary.
    expect(said).toEqual([
      'finished a.jpg, which the last run had uploaded, archived',
      'went on with what the last run left unfinished: 1 finished, 0 taken up again (the server is asked before anything is sent), 0 gone',
    ]);
  });

  for (const [state, mode] of [['on-server', 'delete'], ['deleting', 'delete'], ['archiving', 'move']] as const) {
    it(`${state}: leaves another file of the same size and mtime put in the original's place while the uploader was down`, async () => {
      const files = await writeMedia(root.path, ['r.jpg']);
      const row = await rowFor('r.jpg', state, files.get('r.jpg') ?? Buffer.alloc(0));
      const incoming = join(root.path, '.r.jpg.sync');
      await writeFile(incoming, Buffer.alloc(row.size, 7));
      execFileSync('touch', ['-r', row.path, incoming]);
      await rename(incoming, row.path);
      expect(await recover([row], mode)).toEqual({ finished: 0, resumed: 1, gone: 0, unwatched: 0 });
      expect(await readIfExists(row.path)).toEqual(Buffer.alloc(row.size, 7));
      expect(await readdir(root.archivePath)).toEqual([]);
    });
  }

  it('finds the archived copy under a numbered name when the source is already gone', async () => {
    const files = await writeMedia(root.path, ['b.jpg']);
    const bytes = files.get('b.jpg') ?? Buffer.alloc(0);
    const row = await rowFor('b.jpg', 'archiving', bytes);
    await writeFile(join(root.archivePath, 'b.jpg'), 'another picture');
    await link(row.path, join(root.archivePath, 'b (1).jpg'));
    await unlink(row.path);
    const summary = await recover([row]);
    expect(summary.finished).toBe(1);
    expect(recorded.at(-1)).toMatchObject({ state: 'archived', details: { archivePath: join(root.archivePath, 'b (1).jpg') } });
  });

  it('says so when neither the original nor an archived copy exists', async () => {
    const files = await writeMedia(root.path, ['c.jpg']);
    const row = await rowFor('c.jpg', 'archiving', files.get('c.jpg') ?? Buffer.alloc(0));
    await unlink(row.path);
    const summary = await recover([row]);
    expect(summary.gone).toBe(1);
    expect(recorded.at(-1)?.state).toBe('gone');
  });

  it('archives a confirmed upload without uploading again, and keeps or deletes it by mode', async () => {
    const files = await writeMedia(root.path, ['d.jpg', 'e.jpg', 'e.jpg.xmp', 'f.jpg']);
    await recover([await rowFor('d.jpg', 'on-server', files.get('d.jpg') ?? Buffer.alloc(0))]);
    expect(await readIfExists(join(root.archivePath, 'd.jpg'))).toBeDefined();
    await recover([await rowFor('e.jpg', 'on-server', files.get('e.jpg') ?? Buffer.alloc(0), 'e.jpg.xmp')], 'delete');
    expect(await readIfExists(join(root.path, 'e.jpg'))).toBeUndefined();
    expect(await readIfExists(join(root.path, 'e.jpg.xmp'))).toBeUndefined();
    await recover([await rowFor('f.jpg', 'on-server', files.get('f.jpg') ?? Buffer.alloc(0))], 'keep');
    expect(await readIfExists(join(root.path, 'f.jpg'))).toBeDefined();
    expect(recorded.map((r) => r.state)).toEqual(['archiving', 'archived', 'deleting', 'deleted', 'kept']);
  });

  it('finishes an interrupted deletion, with the sidecar sent and only that', async () => {
    const files = await writeMedia(root.path, ['g.jpg', 'g.jpg.xmp', 'n.jpg', 'n.jpg.xmp']);
    const sentWith = await rowFor('g.jpg', 'deleting', files.get('g.jpg') ?? Buffer.alloc(0), 'g.jpg.xmp');
    // n.jpg's sidecar did not go (the server already had the photo): it stays.
    const notSent = await rowFor('n.jpg', 'deleting', files.get('n.jpg') ?? Buffer.alloc(0));
    const summary = await recover([sentWith, notSent], 'delete');
    expect(summary.finished).toBe(2);
    expect((await readdir(root.path)).filter((name) => name !== 'archive')).toEqual(['n.jpg.xmp']);
    expect(recorded.at(-1)?.state).toBe('deleted');
  });

  it('finishes a deletion the crash cut between the photo and its sidecar: the sidecar sent goes too', async () => {
    const files = await writeMedia(root.path, ['h.jpg', 'h.jpg.xmp']);
    const row = await rowFor('h.jpg', 'deleting', files.get('h.jpg') ?? Buffer.alloc(0), 'h.jpg.xmp');
    await unlink(row.path);
    const summary = await recover([row], 'delete');
    expect(summary).toEqual({ finished: 1, resumed: 0, gone: 0, unwatched: 0 });
    expect((await readdir(root.path)).filter((name) => name !== 'archive')).toEqual([]);
    expect(recorded.at(-1)?.state).toBe('deleted');
  });

  it('finishing an interrupted deletion leaves alone a new file that has taken the path since', async () => {
    const files = await writeMedia(root.path, ['m.jpg', 'm.jpg.xmp']);
    const row = await rowFor('m.jpg', 'deleting', files.get('m.jpg') ?? Buffer.alloc(0));
    // While the uploader was down, another picture arrived under the same name (a camera's
    // counter starting again, say): it was never uploaded, and neither goes nor loses its sidecar.
    await writeFile(row.path, 'another picture, never uploaded');
    const summary = await recover([row], 'delete');
    expect(await readFile(row.path, 'utf8')).toBe('another picture, never uploaded');
    expect(await readIfExists(join(root.path, 'm.jpg.xmp'))).toEqual(files.get('m.jpg.xmp'));
    expect(summary).toEqual({ finished: 1, resumed: 0, gone: 0, unwatched: 0 });
    expect(recorded.at(-1)?.state).toBe('deleted');
  });

  it('neither links nor unlinks when the write-ahead record did not commit', async () => {
    const files = await writeMedia(root.path, ['j.jpg', 'k.jpg']);
    const refused = new Error('disk I/O error (test)');
    const record = makeRecorder(
      async (file, state) => {
        recorded.push({ path: file.path, state });
        throw refused;
      },
      (file, state) => void recorded.push({ path: file.path, state }),
    );
    for (const [name, mode] of [['j.jpg', 'move'], ['k.jpg', 'delete']] as const) {
      const row = await rowFor(name, 'on-server', files.get(name) ?? Buffer.alloc(0));
      await expect(
        recoverUnfinished({ rows: [row], roots: [root], afterUpload: mode, logger: pino({ level: 'silent' }), record }),
      ).rejects.toBe(refused);
      expect(await readIfExists(row.path)).toBeDefined();
    }
    expect(await readdir(root.archivePath)).toEqual([]);
    expect(recorded.map((r) => r.state)).toEqual(['archiving', 'deleting']);
  });

  it('leaves an interrupted upload to the pipeline, and marks a vanished file gone', async () => {
    const files = await writeMedia(root.path, ['h.jpg', 'i.jpg']);
    const present = await rowFor('h.jpg', 'uploading', files.get('h.jpg') ?? Buffer.alloc(0));
    const vanished = await rowFor('i.jpg', 'hashed', files.get('i.jpg') ?? Buffer.alloc(0));
    await unlink(vanished.path);
    const summary = await recover([present, vanished]);
    expect(summary).toEqual({ finished: 0, resumed: 1, gone: 1, unwatched: 0 });
    expect(recorded).toEqual([{ path: vanished.path, state: 'gone', details: undefined }]);
    expect(await readIfExists(present.path)).toBeDefined();
  });
});

describe('recoverUnfinished, a watch folder dropped from WATCH_DIRECTORIES since the crash', () => {
  it('leaves its files where they are and stops redoing them: kept when on the server, skipped before', async () => {
    const files = await writeMedia(root.path, ['archiving.jpg', 'deleting.jpg', 'on-server.jpg', 'uploading.jpg']);
    const rows = await Promise.all(
      (['archiving', 'deleting', 'on-server', 'uploading'] as const).map((state) => rowFor(`${state}.jpg`, state, files.get(`${state}.jpg`) ?? Buffer.alloc(0))),
    );
    const summary = await recoverUnfinished({
      rows,
      roots: [],
      afterUpload: 'move',
      logger: pino({ level: 'silent' }),
      record: async (file, state, details) => void recorded.push({ path: file.path, state, details }),
    });
    expect(summary).toEqual({ finished: 0, resumed: 0, gone: 0, unwatched: 4 });
    const reason = { reason: 'left in place: its folder is no longer watched' };
    expect(recorded).toEqual([
      { path: rows[0]?.path, state: 'kept', details: reason },
      { path: rows[1]?.path, state: 'kept', details: reason },
      { path: rows[2]?.path, state: 'kept', details: reason },
      { path: rows[3]?.path, state: 'skipped', details: reason },
    ]);
    for (const [name, bytes] of files) expect(await readIfExists(join(root.path, name))).toEqual(bytes);
    expect(await readdir(root.archivePath)).toEqual([]);
  });
});

describe('forgetVanishedFailures', () => {
  it('records as gone the failed files that are no longer there, and only those', async () => {
    await writeMedia(root.path, ['still-here.txt']);
    const here = await stat(join(root.path, 'still-here.txt'));
    const rows = [
      { path: join(root.path, 'still-here.txt'), size: here.size, mtimeMs: here.mtimeMs },
      { path: join(root.path, 'removed.txt'), size: 3, mtimeMs: 1 },
      { path: join(temp.path, 'no-longer-watched', 'a.txt'), size: 3, mtimeMs: 1 },
    ];
    const record = async (file: { path: string }, state: FileState, details?: RecordDetails): Promise<void> => void recorded.push({ path: file.path, state, details });
    expect(await forgetVanishedFailures(rows, record)).toBe(2);
    expect(recorded).toEqual([
      { path: rows[1]?.path, state: 'gone', details: { reason: 'no longer there' } },
      { path: rows[2]?.path, state: 'gone', details: { reason: 'no longer there' } },
    ]);
  });
});
