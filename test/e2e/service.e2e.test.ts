/**
 * The systemd unit in deploy/: systemd itself does not run here (it is not PID 1), so the test
 * checks the unit with `systemd-analyze verify` where that exists, and runs its ExecStart as
 * systemd would: from its WorkingDirectory, with nothing in the environment but PATH and HOME,
 * the settings coming from the .env found there; then stops it as `systemctl stop` does.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startFakeImmich, type FakeImmich } from '../fakes/immich-server.js';
import { captureOutput } from '../helpers/cli.js';
import { writeMedia } from '../helpers/media.js';
import { makeTempDir } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait-for.js';

const UNIT = fileURLToPath(new URL('../../deploy/immich-auto-uploader.service', import.meta.url));
const DIST = fileURLToPath(new URL('../../dist', import.meta.url));
const KEY = 'service-test-key-5b2e';
const hasAnalyze = spawnSync('systemd-analyze', ['--version']).status === 0;

let temp: { path: string; remove: () => Promise<void> };
let server: FakeImmich | undefined;

beforeEach(async () => {
  temp = await makeTempDir('iau-service-');
});
afterEach(async () => {
  await server?.close();
  await temp.remove();
});

/** The unit's `Key=value` settings (comments left out), each key with its values in order. */
function settings(unit: string): Map<string, string[]> {
  const found = new Map<string, string[]>();
  for (const line of unit.split('\n')) {
    const match = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (match?.[1] === undefined || match[2] === undefined) continue;
    found.set(match[1], [...(found.get(match[1]) ?? []), match[2]]);
  }
  return found;
}

function setting(unit: string, key: string): string {
  const value = settings(unit).get(key)?.[0];
  if (value === undefined) throw new Error(`the unit has no ${key}=`);
  return value;
}

/** The unit as a user adapts it: their user, their folder, their node. */
function adapted(unit: string, workingDirectory: string): string {
  const user = spawnSync('id', ['-un'], { encoding: 'utf8' }).stdout.trim();
  return unit
    .replace(/^User=.*$/m, `User=${user}`)
    .replace(/^WorkingDirectory=.*$/m, `WorkingDirectory=${workingDirectory}`)
    .replace(/^ExecStart=\/usr\/bin\/node /m, `ExecStart=${process.execPath} `);
}

describe('the systemd unit', () => {
  it('restarts after a failure, except a rejected key, and waits for the network', async () => {
    const unit = await readFile(UNIT, 'utf8');
    expect(setting(unit, 'Restart')).toBe('on-failure');
    expect(setting(unit, 'RestartPreventExitStatus')).toBe('3');
    expect(setting(unit, 'After')).toContain('network-online.target');
    expect(setting(unit, 'WantedBy')).toBe('multi-user.target');
    // Longer than the default SHUTDOWN_GRACE_SECONDS (30), so that uploads in progress may finish.
    expect(Number(setting(unit, 'TimeoutStopSec'))).toBeGreaterThan(30);
  });

  it.skipIf(!hasAnalyze)('passes systemd-analyze verify once adapted, without a warning', async () => {
    const file = join(temp.path, 'immich-auto-uploader.service');
    await writeFile(file, adapted(await readFile(UNIT, 'utf8'), temp.path));
    const verify = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8' });
    expect(verify.status, verify.stderr).toBe(0);
    expect(verify.stderr).toBe('');
  });

  it('runs the daemon as its ExecStart says, configured by the .env in its WorkingDirectory, and stops cleanly', async () => {
    server = await startFakeImmich({ major: 3, keys: { [KEY]: { name: 'service', permissions: ['asset.upload'] } } });
    const work = join(temp.path, 'immich-auto-uploader');
    const inbox = join(temp.path, 'inbox');
    const archive = join(temp.path, 'archive');
    await mkdir(work);
    await mkdir(inbox);
    // The cloned folder, as far as the daemon needs it: the build (which finds its packages through the link).
    await symlink(DIST, join(work, 'dist'));
    await writeFile(
      join(work, '.env'),
      [
        `IMMICH_API_URL=${server.url}`,
        `IMMICH_API_KEY=${KEY}`,
        `WATCH_DIRECTORIES=${inbox}`,
        `ARCHIVE_DIRECTORY=${archive}`,
        `STATE_DIRECTORY=${join(temp.path, 'state')}`,
        'FILE_STABILITY_WAIT_SECONDS=0.3',
        '',
      ].join('\n'),
    );
    const unit = adapted(await readFile(UNIT, 'utf8'), work);
    const [command, ...args] = setting(unit, 'ExecStart').split(' ');
    const child = spawn(command ?? '', args, {
      cwd: setting(unit, 'WorkingDirectory'),
      env: { PATH: process.env.PATH ?? '', HOME: temp.path },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const { stdout, stderr, exited } = captureOutput(child);
    try {
      await waitFor(() => stdout().includes('"msg":"watching'), { message: () => `the daemon watching; stdout:\n${stdout()}\nstderr:\n${stderr()}` });
      await writeMedia(inbox, ['IMG_0001.jpg']);
      await waitFor(() => existsSync(join(archive, 'IMG_0001.jpg')), { message: 'IMG_0001.jpg uploaded and archived' });
      expect(server.assets).toHaveLength(1);
    } finally {
      child.kill('SIGTERM');
    }
    // systemd kills what has not stopped within TimeoutStopSec.
    let timer: NodeJS.Timeout | undefined;
    const killed = new Promise<'killed'>((resolve) => (timer = setTimeout(() => resolve('killed'), Number(setting(unit, 'TimeoutStopSec')) * 1000)));
    const stopped = await Promise.race([exited, killed]);
    clearTimeout(timer);
    if (stopped === 'killed') child.kill('SIGKILL');
    expect(stopped).toEqual({ code: 0, signal: null });
    expect(stderr()).toBe('');
  });
});
