import { stat, symlink, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { WatchRoot } from '../../src/config.js';
import { Settler, type SettleStat, type SettlerOptions } from '../../src/pipeline/settle.js';
import type { Candidate, SettledFile } from '../../src/pipeline/types.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { makeTempDir } from '../helpers/temp-dir.js';

const root: WatchRoot = { path: '/watch', archivePath: '/archive' };
const T0 = 1_700_000_000_000;

/** An in-memory file system for the settler's stat: tests write sizes and mtimes into it. */
class FakeFiles {
  readonly files = new Map<string, SettleStat>();
  statCalls = 0;
  inFlight = 0;
  maxInFlight = 0;
  failWith: Error | undefined;

  write(path: string, size: number, mtimeMs: number, birthtimeMs = 0): Candidate {
    this.files.set(path, { size, mtimeMs, birthtimeMs, isFile: true });
    return { path, root, size, mtimeMs };
  }

  stat = async (path: string): Promise<SettleStat | null> => {
    this.statCalls++;
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      // A real stat answers later, not synchronously: let other stats start meanwhile.
      await Promise.resolve();
      await Promise.resolve();
      if (this.failWith) throw this.failWith;
      const found = this.files.get(path);
      return found ? { ...found } : null;
    } finally {
      this.inFlight--;
    }
  };
}

function setup(options: Partial<SettlerOptions> = {}) {
  const clock = new FakeClock({ start: T0 });
  const files = new FakeFiles();
  const settled: SettledFile[] = [];
  const empty: Candidate[] = [];
  const gone: string[] = [];
  const errors: unknown[] = [];
  const settler = new Settler({
    clock,
    waitMs: 2_000,
    intervalMs: 500,
    stat: files.stat,
    onSettled: (file) => settled.push(file),
    onEmpty: (candidate) => empty.push(candidate),
    onGone: (path) => gone.push(path),
    onError: (error) => errors.push(error),
    ...options,
  });
  opened.push(settler);
  return { clock, files, settled, empty, gone, errors, settler };
}

const opened: Settler[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((settler) => settler.close()));
});

describe('Settler', () => {
  it('reports a file once its size and mtime have held still for the window', async () => {
    const { clock, files, settled, settler } = setup();
    settler.add(files.write('/watch/a.jpg', 100, T0 - 5_000, T0 - 9_000));
    settler.start();

    await clock.advance(1_500);
    expect(settled).toEqual([]);
    await clock.advance(500); // 2,000 ms since the add: the window is full
    expect(settled).toEqual([
      { path: '/watch/a.jpg', root, size: 100, mtimeMs: T0 - 5_000, birthtimeMs: T0 - 9_000 },
    ]);
    expect(settler.pendingCount).toBe(0);

    await clock.advance(10_000);
    expect(settled).toHaveLength(1); // reported once
  });

  it('keeps waiting for a file that is still growing, however long it takes', async () => {
    const { clock, files, settled, settler } = setup();
    settler.add(files.write('/watch/video.mp4', 1, T0));
    settler.start();

    for (let step = 1; step <= 100; step++) {
      files.write('/watch/video.mp4', 1 + step * 1_000, T0 + step * 500);
      await clock.advance(500);
      expect(settled).toEqual([]);
    }
    expect(settler.pendingCount).toBe(1);

    await clock.advance(2_000); // the writer finished at the last step
    expect(settled.map((file) => file.size)).toEqual([100_001]);
  });

  it('measures the window on a clock that does not jump when the system time is set', async () => {
    const { clock, files, settled, settler } = setup();
    // A copy that paused: unchanged at the first look, half a second in.
    settler.add(files.write('/watch/paused.jpg', 100, T0));
    settler.start();
    await clock.advance(500);
    // NTP sets the clock forward a day (a Raspberry Pi after boot), then back an hour.
    clock.jumpWall(24 * 3_600_000);
    await clock.advance(500);
    expect(settled).toEqual([]);
    clock.jumpWall(-3_600_000);
    await clock.advance(500);
    expect(settled).toEqual([]);
    // Neither jump moved the window: it ends 2,000 ms after the add, as ever.
    await clock.advance(500);
    expect(settled.map((file) => file.path)).toEqual(['/watch/paused.jpg']);
  });

  it('starts the window again when only the mtime changes', async () => {
    const { clock, files, settled, settler } = setup();
    settler.add(files.write('/watch/a.jpg', 100, T0));
    settler.start();

    await clock.advance(1_500);
    files.write('/watch/a.jpg', 100, T0 + 1_500); // rewritten in place, same size
    await clock.advance(500); // seen at 2,000: new mtime, the window restarts
    expect(settled).toEqual([]);
    await clock.advance(1_500);
    expect(settled).toEqual([]);
    await clock.advance(500); // 2,000 ms after the change was seen
    expect(settled.map((file) => file.mtimeMs)).toEqual([T0 + 1_500]);
  });

  it('starts the window again when another file of the same size and mtime takes the name, and says which file settled', async () => {
    const { clock, files, settled, settler } = setup();
    settler.add(files.write('/watch/a.jpg', 100, T0));
    files.files.set('/watch/a.jpg', { size: 100, mtimeMs: T0, birthtimeMs: 0, isFile: true, identity: { ino: 1, dev: 9 } });
    settler.start();

    await clock.advance(1_500);
    // Renamed over it, its times kept (rsync -a).
    files.files.set('/watch/a.jpg', { size: 100, mtimeMs: T0, birthtimeMs: 0, isFile: true, identity: { ino: 2, dev: 9 } });
    await clock.advance(500);
    expect(settled).toEqual([]);
    await clock.advance(2_000);
    expect(settled.map((file) => file.identity)).toEqual([{ ino: 2, dev: 9 }]);
  });

  it('falls back to mtime when the file system reports no birth time', async () => {
    const { clock, files, settled, settler } = setup({ waitMs: 0 });
    settler.add(files.write('/watch/a.jpg', 10, T0 - 60_000, 0));
    settler.start();
    await clock.advance(500);
    expect(settled[0]?.birthtimeMs).toBe(T0 - 60_000);
  });

  it('drops a file deleted while it waits and reports it gone', async () => {
    const { clock, files, settled, gone, settler } = setup();
    settler.add(files.write('/watch/a.jpg', 100, T0));
    settler.start();
    await clock.advance(500);
    files.files.delete('/watch/a.jpg');
    await clock.advance(500);
    expect(gone).toEqual(['/watch/a.jpg']);
    expect(settler.pendingCount).toBe(0);
    await clock.advance(5_000);
    expect(settled).toEqual([]);
  });

  it('drops a path that is no longer a regular file', async () => {
    const { clock, files, settled, gone, settler } = setup();
    settler.add(files.write('/watch/a.jpg', 100, T0));
    settler.start();
    files.files.set('/watch/a.jpg', { size: 100, mtimeMs: T0, birthtimeMs: 0, isFile: false });
    await clock.advance(500);
    expect(gone).toEqual(['/watch/a.jpg']);
    await clock.advance(5_000);
    expect(settled).toEqual([]);
  });

  it('reports a file that settles empty through onEmpty, not onSettled', async () => {
    const { clock, files, settled, empty, settler } = setup();
    settler.add(files.write('/watch/empty.jpg', 0, T0));
    settler.start();
    await clock.advance(2_000);
    expect(empty).toEqual([{ path: '/watch/empty.jpg', root, size: 0, mtimeMs: T0 }]);
    expect(settled).toEqual([]);
    expect(settler.pendingCount).toBe(0);
  });

  it('reports a file that was empty when found but filled in later through onSettled', async () => {
    const { clock, files, settled, empty, settler } = setup();
    settler.add(files.write('/watch/a.jpg', 0, T0));
    settler.start();
    await clock.advance(1_000);
    files.write('/watch/a.jpg', 500, T0 + 1_000);
    await clock.advance(3_000);
    expect(empty).toEqual([]);
    expect(settled.map((file) => file.size)).toEqual([500]);
  });

  it('with waitMs 0, settles at once at the first tick that sees the same size and mtime as the add', async () => {
    const { clock, files, settled, settler } = setup({ waitMs: 0 });
    const candidate = files.write('/watch/a.jpg', 100, T0);
    settler.add(candidate);
    expect(settled).toEqual([]); // never on add alone: it must be observed twice
    settler.start();
    await clock.advance(0);
    expect(settled).toHaveLength(1);
  });

  it('with waitMs 0, a file that changed between the add and the tick waits an interval more', async () => {
    const { clock, files, settled, settler } = setup({ waitMs: 0 });
    settler.add(files.write('/watch/a.jpg', 100, T0));
    files.write('/watch/a.jpg', 200, T0 + 100);
    settler.start();
    await clock.advance(499);
    expect(settled).toEqual([]);
    await clock.advance(1);
    expect(settled.map((file) => file.size)).toEqual([200]);
  });

  it('reports a file exactly when its window ends, not at the next interval', async () => {
    const { clock, files, settled, settler } = setup({ waitMs: 700, intervalMs: 500 });
    settler.add(files.write('/watch/a.jpg', 100, T0));
    settler.start();
    await clock.advance(699);
    expect(settled).toEqual([]);
    await clock.advance(1);
    expect(settled).toHaveLength(1);
  });

  it('wakes up for a file added while it sleeps, when that file is due sooner', async () => {
    const { clock, files, settled, settler } = setup({ waitMs: 100, intervalMs: 10_000 });
    settler.start();
    await clock.advance(1_000);
    settler.add(files.write('/watch/late.jpg', 100, T0 + 1_000));
    await clock.advance(100);
    expect(settled.map((file) => file.path)).toEqual(['/watch/late.jpg']);
  });

  it('adding a pending path again keeps its observation; a new version restarts the window', async () => {
    const { clock, files, settled, settler } = setup();
    settler.add(files.write('/watch/a.jpg', 100, T0));
    settler.start();
    await clock.advance(1_500);
    settler.add({ path: '/watch/a.jpg', root, size: 100, mtimeMs: T0 }); // a rescan reports it again
    await clock.advance(500);
    expect(settled).toHaveLength(1); // the window was not restarted

    settler.add(files.write('/watch/b.jpg', 100, T0));
    await clock.advance(1_500);
    settler.add(files.write('/watch/b.jpg', 300, T0 + 3_500)); // an event with a new version
    expect(settler.pendingCount).toBe(1);
    await clock.advance(1_500);
    expect(settled).toHaveLength(1);
    await clock.advance(500);
    expect(settled.map((file) => [file.path, file.size])).toEqual([
      ['/watch/a.jpg', 100],
      ['/watch/b.jpg', 300],
    ]);
  });

  it('delete() forgets a pending file without a callback', async () => {
    const { clock, files, settled, gone, settler } = setup();
    settler.add(files.write('/watch/a.jpg', 100, T0));
    settler.start();
    expect(settler.delete('/watch/a.jpg')).toBe(true);
    expect(settler.delete('/watch/a.jpg')).toBe(false);
    await clock.advance(5_000);
    expect(settled).toEqual([]);
    expect(gone).toEqual([]);
    expect(files.statCalls).toBe(0);
  });

  it('runs one timer for many files and stats them with bounded concurrency', async () => {
    const { clock, files, settled, settler } = setup({ statConcurrency: 4 });
    for (let index = 0; index < 500; index++) settler.add(files.write(`/watch/${index}.jpg`, 100 + index, T0));
    settler.start();
    await clock.flush();
    expect(clock.pendingSleepers).toBe(1);

    await clock.advance(500);
    expect(files.statCalls).toBe(500); // every pending file once per tick
    expect(files.maxInFlight).toBe(4);
    expect(clock.pendingSleepers).toBe(1);

    await clock.advance(1_500);
    expect(settled).toHaveLength(500);
    expect(new Set(settled.map((file) => file.path)).size).toBe(500);
  });

  it('keeps a file whose stat fails for another reason than "gone" and reports the error', async () => {
    const { clock, files, settled, errors, settler } = setup();
    settler.add(files.write('/watch/a.jpg', 100, T0));
    settler.start();
    files.failWith = Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES' });
    await clock.advance(1_000);
    expect(errors).toHaveLength(2);
    expect(settler.pendingCount).toBe(1);
    files.failWith = undefined;
    await clock.advance(1_000);
    expect(settled).toHaveLength(1);
  });

  it('carries on when a callback throws or rejects', async () => {
    const received: string[] = [];
    const { clock, files, errors, settler } = setup({
      waitMs: 0,
      onSettled: (file) => {
        received.push(file.path);
        if (file.path.endsWith('throws.jpg')) throw new Error('consumer broke');
      },
      // On purpose: an async consumer where a sync one is expected must not leak a rejection.
      // eslint-disable-next-line @typescript-eslint/no-misused-promises
      onEmpty: () => Promise.reject(new Error('async consumer broke')),
    });
    settler.add(files.write('/watch/throws.jpg', 1, T0));
    settler.add(files.write('/watch/empty.jpg', 0, T0));
    settler.add(files.write('/watch/fine.jpg', 1, T0));
    settler.start();
    await clock.advance(500);
    expect(received.sort()).toEqual(['/watch/fine.jpg', '/watch/throws.jpg']);
    expect(errors.map((error) => (error as Error).message).sort()).toEqual(['async consumer broke', 'consumer broke']);

    settler.add(files.write('/watch/later.jpg', 1, T0));
    await clock.advance(500);
    expect(received).toContain('/watch/later.jpg');
  });

  it('ignores a stat answer that arrives after the file was re-added with a new version', async () => {
    let release: (() => void) | undefined;
    const files = new FakeFiles();
    const { clock, settled, settler } = setup({
      waitMs: 0,
      stat: async (path) => {
        const answer = await files.stat(path);
        await new Promise<void>((resolve) => (release = resolve));
        return answer;
      },
    });
    settler.add(files.write('/watch/a.jpg', 100, T0));
    const tick = settler.tick();
    await clock.flush();
    settler.add(files.write('/watch/a.jpg', 200, T0 + 1)); // a new version while the stat is out
    release?.();
    await tick;
    expect(settled).toEqual([]); // the old answer would have matched the old observation
    expect(settler.pendingCount).toBe(1);
  });

  it('joins overlapping ticks instead of stat-ing twice', async () => {
    const { files, settler } = setup({ waitMs: 0 });
    settler.add(files.write('/watch/a.jpg', 100, T0));
    const first = settler.tick();
    const second = settler.tick();
    expect(second).toBe(first);
    await Promise.all([first, second]);
    expect(files.statCalls).toBe(1);
  });

  it('close() stops the loop: no timer left, no more stats, adds ignored', async () => {
    const { clock, files, settled, settler } = setup();
    settler.add(files.write('/watch/a.jpg', 100, T0));
    settler.start();
    await clock.advance(500);
    expect(files.statCalls).toBe(1);

    await settler.close();
    expect(clock.pendingSleepers).toBe(0);
    expect(settler.pendingCount).toBe(0);
    settler.add(files.write('/watch/b.jpg', 100, T0));
    expect(settler.pendingCount).toBe(0);
    await clock.advance(10_000);
    expect(files.statCalls).toBe(1);
    expect(settled).toEqual([]);
  });

  it('close() waits for a tick in progress', async () => {
    let release: (() => void) | undefined;
    const files = new FakeFiles();
    const { clock, settled, settler } = setup({
      waitMs: 0,
      stat: async (path) => {
        await new Promise<void>((resolve) => (release = resolve));
        return files.stat(path);
      },
    });
    settler.add(files.write('/watch/a.jpg', 100, T0));
    settler.start();
    await clock.advance(500);
    expect(release).toBeDefined();
    let closed = false;
    const closing = settler.close().then(() => (closed = true));
    await clock.flush();
    expect(closed).toBe(false);
    release?.();
    await closing;
    expect(settled).toEqual([]); // the answer came after close: not reported
  });

  it('rejects impossible options with what was expected', () => {
    const clock = new FakeClock();
    const base = { clock, onSettled: () => undefined, onEmpty: () => undefined };
    expect(() => new Settler({ ...base, waitMs: -1, intervalMs: 500 })).toThrow(/waitMs: expected a number >= 0, got -1/);
    expect(() => new Settler({ ...base, waitMs: 0, intervalMs: 0 })).toThrow(/intervalMs/);
    expect(() => new Settler({ ...base, waitMs: 0, intervalMs: 1, statConcurrency: 0 })).toThrow(/statConcurrency/);
  });
});

describe('Settler with the default stat (real files)', () => {
  it('settles a real file, drops a deleted one and skips a symlink', async () => {
    const dir = await makeTempDir();
    try {
      const clock = new FakeClock({ start: T0 });
      const settled: SettledFile[] = [];
      const gone: string[] = [];
      const settler = new Settler({
        clock,
        waitMs: 0,
        intervalMs: 100,
        onSettled: (file) => settled.push(file),
        onEmpty: () => undefined,
        onGone: (path) => gone.push(path),
      });
      opened.push(settler);
      const real = join(dir.path, 'real photo é.jpg');
      const deleted = join(dir.path, 'deleted.jpg');
      const link = join(dir.path, 'link.jpg');
      await writeFile(real, 'abc');
      await writeFile(deleted, 'abc');
      await symlink(real, link);
      const add = async (path: string, statPath = path): Promise<void> => {
        const stats = await stat(statPath);
        settler.add({ path, root, size: stats.size, mtimeMs: stats.mtimeMs });
      };
      await add(real);
      await add(deleted);
      await add(link, real);
      await unlink(deleted);
      // Real lstat runs in the thread pool: tick directly rather than guessing event-loop turns.
      await settler.tick();
      expect(settled[0]?.path).toBe(real);
      expect(settled[0]?.size).toBe(3);
      expect(gone.sort()).toEqual([deleted, link].sort());
    } finally {
      await dir.remove();
    }
  });
});

describe('FakeClock (the time these tests run on)', () => {
  it('resolves sleepers in time order, one step at a time, including ones created while advancing', async () => {
    const clock = new FakeClock({ start: 0 });
    const log: string[] = [];
    const loop = async (): Promise<void> => {
      for (let step = 0; step < 3; step++) {
        await clock.sleep(100);
        await Promise.resolve(); // some awaited work between two sleeps
        log.push(`loop@${clock.now()}`);
      }
    };
    const done = loop();
    // Cannot reject (no signal); the expectation on `log` checks it ran.
    void clock.sleep(250).then(() => log.push(`once@${clock.now()}`));
    await clock.advance(1_000);
    await done;
    expect(log).toEqual(['loop@100', 'loop@200', 'once@250', 'loop@300']);
    expect(clock.now()).toBe(1_000);
    expect(clock.pendingSleepers).toBe(0);
  });

  it('rejects an aborted sleep with the signal reason and forgets it', async () => {
    const clock = new FakeClock();
    const controller = new AbortController();
    const sleeping = clock.sleep(100, controller.signal);
    expect(clock.pendingSleepers).toBe(1);
    controller.abort();
    await expect(sleeping).rejects.toMatchObject({ name: 'AbortError' });
    expect(clock.pendingSleepers).toBe(0);
    await expect(clock.sleep(1, controller.signal)).rejects.toMatchObject({ name: 'AbortError' });
  });

  it('refuses overlapping advances and negative durations', async () => {
    const clock = new FakeClock();
    const first = clock.advance(10);
    await expect(clock.advance(10)).rejects.toThrow(/another advance/);
    await first;
    await expect(clock.advance(-1)).rejects.toThrow(RangeError);
    expect(await clock.advanceToNext()).toBe(false);
  });
});
