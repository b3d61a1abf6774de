import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { formatDuration, judgeHealth } from '../../src/commands/health.js';
import { lastedMs, Problems, PROBLEMS_FILE, readProblems, type Problem } from '../../src/support/problems.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { makeTempDir } from '../helpers/temp-dir.js';

let temp: { path: string; remove: () => Promise<void> };

beforeEach(async () => {
  temp = await makeTempDir('iau-health-');
});
afterEach(async () => {
  await temp.remove();
});

describe('Problems', () => {
  it('keeps in the state folder what lasts, each with when it began, and nothing once the run ends', async () => {
    const clock = new FakeClock({ start: Date.UTC(2026, 10, 28, 9, 0, 0) });
    await writeFile(join(temp.path, PROBLEMS_FILE), JSON.stringify({ problems: [{ kind: 'server', message: 'a crashed run', since: '2020-01-01T00:00:00.000Z' }] }));
    const problems = new Problems({ clock, directory: temp.path, uptime: () => 1000 + (clock.monotonic() - Date.UTC(2026, 10, 28, 9, 0, 0)) / 1000 });
    expect(readProblems(temp.path), 'a crashed run is forgotten at start').toEqual([]);

    problems.raise('server', 'Immich server is not answering');
    await clock.advance(60_000);
    problems.raise('server', 'said again');
    problems.raise('archive-disk', 'the archive disk is gone');
    expect(readProblems(temp.path)).toEqual<Problem[]>([
      { kind: 'server', message: 'Immich server is not answering', since: '2026-11-28T09:00:00.000Z', sinceUptime: 1000 },
      { kind: 'archive-disk', message: 'the archive disk is gone', since: '2026-11-28T09:01:00.000Z', sinceUptime: 1060 },
    ]);
    problems.clear('server');
    problems.clear('uploads');
    expect(readProblems(temp.path).map((problem) => problem.kind)).toEqual(['archive-disk']);

    problems.close();
    await expect(readFile(join(temp.path, PROBLEMS_FILE))).rejects.toThrow(/ENOENT/);
    expect(readProblems(temp.path)).toEqual([]);
  });

  it('reads a damaged file as no problems', async () => {
    await writeFile(join(temp.path, PROBLEMS_FILE), '{"problems": [');
    expect(readProblems(temp.path)).toEqual([]);
  });
});

describe('judgeHealth', () => {
  const now = Date.UTC(2026, 10, 28, 12, 0, 0);
  /** Seconds since boot, now. */
  const uptime = 50_000;
  const away = (minutesAgo: number): Problem => ({
    kind: 'server',
    message: 'Immich server is not answering (connection refused); uploads wait until it does',
    since: new Date(now - minutesAgo * 60_000).toISOString(),
    sinceUptime: uptime - minutesAgo * 60,
  });
  const judge = (running: boolean, problems: Problem[]) => judgeHealth({ running, problems, now, uptime, graceMs: 300_000, directory: '/state' });

  it('is unhealthy when no uploader runs, whatever an old file says', () => {
    expect(judge(false, [])).toEqual({ healthy: false, line: 'unhealthy: no uploader is running with STATE_DIRECTORY /state' });
  });

  it('is healthy while a problem is younger than the grace, and says so', () => {
    expect(judge(true, [])).toEqual({ healthy: true, line: 'healthy: an uploader is running, and nothing keeps it from its work' });
    expect(judge(true, [away(2)])).toEqual({
      healthy: true,
      line: 'healthy for now: Immich server is not answering (connection refused); uploads wait until it does (for 2 min, since 2026-11-28T11:58:00.000Z); unhealthy if it lasts over 5 min',
    });
  });

  it('is unhealthy once a problem outlasts the grace, naming only those that do', () => {
    const disk: Problem = { kind: 'archive-disk', message: 'the archive disk is gone', since: new Date(now - 1_000).toISOString(), sinceUptime: uptime - 1 };
    expect(judge(true, [away(185), disk])).toEqual({
      healthy: false,
      line: 'unhealthy: Immich server is not answering (connection refused); uploads wait until it does (for 3 h 5 min, since 2026-11-28T08:55:00.000Z)',
    });
  });
});

describe('how long a problem lasts', () => {
  it('is measured from boot, which setting the system time does not move', () => {
    const since = Date.UTC(2026, 10, 28, 12, 0, 0);
    const problem: Problem = { kind: 'server', message: 'away', since: new Date(since).toISOString(), sinceUptime: 30 };
    // A Raspberry Pi sets its time hours forward, a minute after it noted the problem.
    expect(lastedMs(problem, since + 5 * 3_600_000, 90)).toBe(60_000);
    // Written by a release that did not note the uptime, or before a reboot: the system time, then.
    expect(lastedMs({ ...problem, sinceUptime: 1_000 }, since + 120_000, 90)).toBe(120_000);
  });
});

describe('formatDuration', () => {
  it('says seconds, minutes, then hours and minutes', () => {
    expect([0, 59_400, 60_000, 3_599_000, 3_600_000, 3_660_000].map(formatDuration)).toEqual(['0 s', '59 s', '1 min', '59 min', '1 h', '1 h 1 min']);
  });
});
