/**
 * End-to-end tests of what the journal promises across runs: keep mode does no work for files it
 * already kept, delete mode removes originals and their sidecars, `status` / `history` / `retry`
 * tell and change what the journal knows, one instance per STATE_DIRECTORY, and a journal from a
 * newer release or a damaged one is handled without losing a picture.
 *
 * Like uploader.e2e.test.ts: real temporary folders, the fake Immich in this process on
 * 127.0.0.1, the built CLI as a child process, and assertions on what the server received and
 * what the disk (and the journal, through `status --json`) holds.
 */
import { randomBytes, randomInt } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { StatusReport } from '../../src/commands/status.js';
import { openDatabase } from '../../src/journal/sqlite.js';
import { startFakeImmich, type FakeImmich, type FakeRequest } from '../fakes/immich-server.js';
import { cliRunsAs, NOBODY, runCli, startCli, type CliRun, type LogLine } from '../helpers/cli.js';
import { readIfExists, sha1, writeMedia } from '../helpers/media.js';
import { makeTempDir } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait-for.js';

/** A key distinctive enough that finding it anywhere in the output is never a coincidence. */
const KEY = 'journal-e2e-secret-KEY-c41d9e';

type RunResult = Awaited<ReturnType<typeof runCli>>;

let temp: { path: string; remove: () => Promise<void> };
let watchDir: string;
let archiveDir: string;
let stateDir: string;
let server: FakeImmich | undefined;
const running: CliRun[] = [];
/** stdout and stderr of every run of this file, checked for the key after each test. */
const outputs: { what: string; text: () => string }[] = [];

beforeEach(async () => {
  temp = await makeTempDir('iau-journal-e2e-');
  watchDir = join(temp.path, 'inbox');
  archiveDir = join(temp.path, 'archive');
  stateDir = join(temp.path, 'state');
  await mkdir(watchDir);
});

afterEach(async () => {
  for (const run of running.splice(0)) {
    if (run.child.exitCode === null && run.child.signalCode === null) run.child.kill('SIGKILL');
    await run.exited;
  }
  await server?.close();
  server = undefined;
  await temp.remove();
  // Every run of every test, whatever it did: the key never shows.
  for (const { what, text } of outputs.splice(0)) expect(text(), `the API key in ${what}`).not.toContain(KEY);
});

async function startServer(): Promise<FakeImmich> {
  server = await startFakeImmich({ major: 3, keys: { [KEY]: { name: 'journal e2e key', permissions: ['asset.upload'] } } });
  return server;
}

function theServer(): FakeImmich {
  if (!server) throw new Error('start the fake server first');
  return server;
}

function env(extra: Record<string, string> = {}): Record<string, string> {
  return {
    // Journal commands need no server; a URL that refuses connections proves it when none runs.
    IMMICH_API_URL: server?.url ?? 'http://127.0.0.1:9',
    IMMICH_API_KEY: KEY,
    WATCH_DIRECTORIES: watchDir,
    ARCHIVE_DIRECTORY: archiveDir,
    STATE_DIRECTORY: stateDir,
    FILE_STABILITY_WAIT_SECONDS: '0.2',
    FILE_STABILITY_CHECK_INTERVAL: '0.1',
    SHUTDOWN_GRACE_SECONDS: '5',
    ...extra,
  };
}

/** Runs the CLI to its end, remembering its output for the key check. */
async function cli(args: string[], extra: Record<string, string> = {}, timeoutMs?: number): Promise<RunResult> {
  const result = await runCli(args, { env: env(extra), ...(timeoutMs !== undefined ? { timeoutMs } : {}) });
  outputs.push({ what: `${args.join(' ')} stdout`, text: () => result.stdout }, { what: `${args.join(' ')} stderr`, text: () => result.stderr });
  return result;
}

function watch(extra: Record<string, string> = {}): CliRun {
  const run = startCli(['watch'], { env: env(extra) });
  running.push(run);
  outputs.push({ what: 'watch stdout', text: run.stdout }, { what: 'watch stderr', text: run.stderr });
  return run;
}

async function startWatching(extra: Record<string, string> = {}): Promise<CliRun> {
  const run = watch(extra);
  await run.waitForLog((line) => line.msg.startsWith('watching'), { message: 'the daemon to start watching' });
  return run;
}

async function stopGracefully(run: CliRun): Promise<number | null> {
  run.child.kill('SIGTERM');
  const { code } = await run.exited;
  return code;
}

function summaryOf(result: RunResult): LogLine & Record<string, number> {
  const summary = result.logs.find((line) => line.msg.startsWith('summary:'));
  expect(summary, `a summary line; stdout:\n${result.stdout.slice(-3000)}`).toBeDefined();
  return summary as LogLine & Record<string, number>;
}

/**
 * `status --json`, parsed: what the journal says. Run without runCli, whose log parsing is for
 * JSON log lines, not for one pretty-printed JSON document.
 */
async function status(args: string[] = []): Promise<StatusReport> {
  const run = startCli(['status', '--json', ...args], { env: env() });
  outputs.push({ what: 'status --json stdout', text: run.stdout }, { what: 'status --json stderr', text: run.stderr });
  // A deadline: a hung `status` is killed and fails the expectation below instead of the test's timeout.
  const deadline = setTimeout(() => run.child.kill('SIGKILL'), 20_000);
  const { code } = await run.exited.finally(() => clearTimeout(deadline));
  expect(code, `status --json exit code; ${run.stdout()}${run.stderr()}`).toBe(0);
  return JSON.parse(run.stdout()) as StatusReport;
}

function requestsSince(from: number, method: string, path: string): FakeRequest[] {
  return theServer()
    .requests.slice(from)
    .filter((request) => request.method === method && request.path === path);
}

/** Each file is in the archive with exactly its bytes, gone from the watch folder, and on the server once. */
async function expectUploadedAndArchived(files: Map<string, Buffer>): Promise<void> {
  for (const [name, bytes] of files) {
    expect(existsSync(join(watchDir, name)), `${name} left the watch folder`).toBe(false);
    const archived = await readIfExists(join(archiveDir, name));
    expect(archived && sha1(archived), `${name} archived with its bytes`).toBe(sha1(bytes));
    expectOnServerOnce(name, bytes);
  }
}

function expectOnServerOnce(name: string, bytes: Buffer): void {
  const received = theServer().assets.filter((asset) => asset.checksum === sha1(bytes));
  expect(received, `${name} is on the server exactly once`).toHaveLength(1);
  expect(received[0]?.size, `${name} arrived complete`).toBe(bytes.length);
}

async function expectInPlace(files: Map<string, Buffer>): Promise<void> {
  for (const [name, bytes] of files) {
    const present = await readIfExists(join(watchDir, name));
    expect(present && sha1(present), `${name} still in place, unchanged`).toBe(sha1(bytes));
  }
}

function assetIdOf(bytes: Buffer): string {
  const asset = theServer().assetByChecksum(sha1(bytes));
  if (!asset) throw new Error('expected the asset on the fake server');
  return asset.id;
}

describe('keep mode', () => {
  it('after a restart, 2,000 kept files are neither hashed nor sent to the server; only changed ones are', async () => {
    await startServer();
    const files = new Map<string, Buffer>();
    const names = Array.from({ length: 2000 }, (_, i) => `folder-${String(i % 20).padStart(2, '0')}/IMG_${i}.jpg`);
    for (let folder = 0; folder < 20; folder++) await mkdir(join(watchDir, `folder-${String(folder).padStart(2, '0')}`));
    await Promise.all(
      names.map(async (name) => {
        const bytes = randomBytes(randomInt(1024, 4097));
        files.set(name, bytes);
        await writeFile(join(watchDir, name), bytes);
      }),
    );
    const keep = { AFTER_UPLOAD: 'keep' };

    const first = await cli(['once'], keep, 100_000);
    expect(first.code, first.stdout.slice(-3000)).toBe(0);
    expect(summaryOf(first)).toMatchObject({ uploaded: 2000, failed: 0, hashed: 2000 });
    expect(theServer().assets).toHaveLength(2000);
    const onServer = new Set(theServer().assets.map((asset) => asset.checksum));
    for (const [name, bytes] of files) expect(onServer.has(sha1(bytes)), `${name} on the server`).toBe(true);
    await expectInPlace(files);
    expect(existsSync(archiveDir), 'keep mode archives nothing').toBe(false);

    const beforeRestart = theServer().requests.length;
    const second = await cli(['once'], keep, 100_000);
    expect(second.code, second.stdout.slice(-3000)).toBe(0);
    expect(summaryOf(second)).toMatchObject({ hashed: 0, uploaded: 0, duplicates: 0, failed: 0, unchanged: 2000 });
    expect(requestsSince(beforeRestart, 'POST', '/api/assets/bulk-upload-check'), 'no duplicate check after a restart').toHaveLength(0);
    expect(requestsSince(beforeRestart, 'POST', '/api/assets'), 'no upload after a restart').toHaveLength(0);
    expect(theServer().assets).toHaveLength(2000);
    await expectInPlace(files);

    // New content (and a new size, so the version differs even on a coarse-mtime file system).
    const changed = new Map<string, Buffer>();
    for (const name of [names[7], names[1000], names[1999]] as string[]) {
      const bytes = randomBytes((files.get(name)?.length ?? 0) + 1);
      await writeFile(join(watchDir, name), bytes);
      changed.set(name, bytes);
      files.set(name, bytes);
    }
    const beforeChange = theServer().requests.length;
    const third = await cli(['once'], keep, 100_000);
    expect(third.code, third.stdout.slice(-3000)).toBe(0);
    expect(summaryOf(third)).toMatchObject({ hashed: 3, uploaded: 3, duplicates: 0, failed: 0, unchanged: 1997 });
    expect(requestsSince(beforeChange, 'POST', '/api/assets').filter((r) => r.status === 201)).toHaveLength(3);
    expect(theServer().assets).toHaveLength(2003);
    for (const [name, bytes] of changed) expectOnServerOnce(name, bytes);
    await expectInPlace(files);
    const report = await status();
    expect(report.counts).toEqual({ kept: 2000 });
    expect(report.totals.ever.files).toBe(2003);
  }, 120_000);
});

describe('keep mode in watch', () => {
  it('rescans see kept files again without work, and count them once', async () => {
    await startServer();
    const files = await writeMedia(watchDir, ['k/1.jpg', 'k/2.jpg', 'k/3.jpg']);
    expect((await cli(['once'], { AFTER_UPLOAD: 'keep' })).code).toBe(0);
    const before = theServer().requests.length;
    const run = await startWatching({ AFTER_UPLOAD: 'keep', WATCH_POLLING: 'true', WATCH_POLL_INTERVAL_SECONDS: '0.1' });
    // The initial scan and at least three rescans, each passing over every kept file.
    await waitFor(() => run.logs().filter((line) => line.msg === 'scan pass done').length >= 4, {
      message: 'four scan passes',
    });
    expect(await stopGracefully(run)).toBe(0);
    const summary = run.logs().find((line) => line.msg.startsWith('summary:'));
    expect(summary).toMatchObject({ unchanged: files.size, hashed: 0, uploaded: 0 });
    expect(requestsSince(before, 'POST', '/api/assets')).toEqual([]);
    await expectInPlace(files);
  });
});

describe('delete mode', () => {
  it('uploads each original with its sidecar and deletes both; a shared sidecar only once no file of its stem is left', async () => {
    await startServer();
    const media = await writeMedia(watchDir, ['photo.jpg', 'pair.heic', 'pair.mov', 'memo.heic']);
    const sidecars = await writeMedia(watchDir, ['photo.jpg.xmp', 'pair.xmp', 'memo.xmp', 'known.jpg.xmp'], 300);
    // The server refuses this one: it must stay, and so must the sidecar its stem shares.
    await writeFile(join(watchDir, 'memo.txt'), 'not a photo');
    // The server already has this one: its sidecar does not go with it, so it stays.
    const known = await writeMedia(watchDir, ['known.jpg']);
    theServer().seedAsset({ checksum: sha1(known.get('known.jpg') ?? Buffer.alloc(0)) });

    const result = await cli(['once'], { AFTER_UPLOAD: 'delete', SUPPORTED_EXTENSIONS: 'jpg,heic,mov,txt' });
    expect(result.code, result.stdout.slice(-3000)).toBe(1);
    expect(summaryOf(result)).toMatchObject({ uploaded: 4, duplicates: 1, failed: 1 });
    for (const [name, bytes] of media) expectOnServerOnce(name, bytes);
    expect(theServer().assets).toHaveLength(5);
    const sentWith = (photo: string): string | undefined =>
      theServer().assetByChecksum(sha1(media.get(photo) ?? Buffer.alloc(0)))?.sidecar?.filename;
    expect(['photo.jpg', 'pair.heic', 'pair.mov', 'memo.heic'].map(sentWith)).toEqual(['photo.jpg.xmp', 'pair.xmp', 'pair.xmp', 'memo.xmp']);
    expect(theServer().assetByChecksum(sha1(media.get('photo.jpg') ?? Buffer.alloc(0)))?.sidecar?.bytes).toEqual(sidecars.get('photo.jpg.xmp'));
    expect((await readdir(watchDir)).sort(), 'what is left in the watch folder').toEqual(['known.jpg.xmp', 'memo.txt', 'memo.xmp']);
    expect(sha1((await readIfExists(join(watchDir, 'memo.xmp'))) ?? Buffer.alloc(0))).toBe(sha1(sidecars.get('memo.xmp') ?? Buffer.alloc(1)));
    expect(await readFile(join(watchDir, 'memo.txt'), 'utf8')).toBe('not a photo');
    expect(existsSync(archiveDir), 'delete mode archives nothing').toBe(false);

    const report = await status();
    expect(report.counts).toEqual({ deleted: 5, failed: 1 });
    // history says which sidecar went with a photo.
    const history = await cli(['history', 'photo.jpg'], { AFTER_UPLOAD: 'delete' });
    const onServer = history.stdout.split('\n').find((line) => line.includes(' on-server '));
    expect(onServer).toContain(`sidecar=${join(watchDir, 'photo.jpg.xmp')}`);
  });

  it('after a run in keep mode, deletes the sidecars that went to the server then, and keeps one changed since', async () => {
    await startServer();
    const media = await writeMedia(watchDir, ['a.jpg', 'b.jpg']);
    const sidecars = await writeMedia(watchDir, ['a.jpg.xmp', 'b.jpg.xmp'], 300);
    const kept = await cli(['once'], { AFTER_UPLOAD: 'keep' });
    expect(kept.code, kept.stdout.slice(-3000)).toBe(0);
    expect(['a.jpg', 'b.jpg'].map((name) => theServer().assetByChecksum(sha1(media.get(name) ?? Buffer.alloc(0)))?.sidecar?.filename)).toEqual([
      'a.jpg.xmp',
      'b.jpg.xmp',
    ]);
    // Edited since: what it holds now is nowhere else.
    const edited = Buffer.concat([sidecars.get('b.jpg.xmp') ?? Buffer.alloc(0), Buffer.from('<!-- rating 5 -->')]);
    await writeFile(join(watchDir, 'b.jpg.xmp'), edited);

    const deleted = await cli(['once'], { AFTER_UPLOAD: 'delete' });
    expect(deleted.code, deleted.stdout.slice(-3000)).toBe(0);
    expect(summaryOf(deleted)).toMatchObject({ uploaded: 0, duplicates: 2 });
    expect(await readdir(watchDir)).toEqual(['b.jpg.xmp']);
    expect(await readFile(join(watchDir, 'b.jpg.xmp'))).toEqual(edited);
    const warnings = deleted.logs.filter((line) => line.level === 40).map((line) => line.msg);
    expect(warnings).toEqual([expect.stringMatching(/^b\.jpg\.xmp stays here: b\.jpg was on the server already/)]);
    expect(theServer().assets).toHaveLength(2);
  });

  it('keeps a file the server has only in its trash until it is restored, then deletes it', async () => {
    await startServer();
    const media = await writeMedia(watchDir, ['deleted-in-immich.jpg', 'new.jpg']);
    const trashed = theServer().seedAsset({ checksum: sha1(media.get('deleted-in-immich.jpg') ?? Buffer.alloc(0)), trashed: true });

    const first = await cli(['once'], { AFTER_UPLOAD: 'delete' });
    expect(first.code, first.stdout.slice(-3000)).toBe(1);
    expect(summaryOf(first)).toMatchObject({ uploaded: 1, failed: 1 });
    expect(first.logs.some((line) => line.msg.includes('only in its trash'))).toBe(true);
    expect(await readdir(watchDir)).toEqual(['deleted-in-immich.jpg']);

    // Restored from the trash in Immich: the next run finds it there and deletes the original.
    trashed.trashed = false;
    const second = await cli(['once'], { AFTER_UPLOAD: 'delete' });
    expect(second.code, second.stdout.slice(-3000)).toBe(0);
    expect(summaryOf(second)).toMatchObject({ uploaded: 0, duplicates: 1, failed: 0 });
    expect(await readdir(watchDir)).toEqual([]);
    expect(theServer().assets).toHaveLength(2);
  });
});

describe('move mode to another disk', () => {
  it('walks the archive for leftover temporaries only after a run that may have left some', async () => {
    await startServer();
    const exdev = { IMMICH_AUTO_UPLOADER_SIMULATE_EXDEV: '1' };
    const stamp = join(stateDir, 'archive-clean.json');
    const first = await writeMedia(watchDir, ['a.jpg', 'sub/b.jpg']);
    const result = await cli(['once'], exdev);
    expect(result.code, result.stdout.slice(-3000)).toBe(0);
    await expectUploadedAndArchived(first);
    expect(existsSync(stamp), 'a run that removed all its temporaries stamps the archive').toBe(true);

    // The stamp says there is nothing to find, so nothing looks.
    const planted = join(archiveDir, 'sub', '.c.jpg.iau-tmp-0123456789ab');
    await writeFile(planted, 'half a copy');
    expect((await cli(['once'], exdev)).code).toBe(0);
    expect(existsSync(planted)).toBe(true);

    // A run that copies removes the stamp first; killed, it cannot stamp again.
    const run = await startWatching(exdev);
    const later = await writeMedia(watchDir, ['c.jpg']);
    await waitFor(() => existsSync(join(archiveDir, 'c.jpg')), { message: 'c.jpg to be archived' });
    run.child.kill('SIGKILL');
    await run.exited;
    expect(existsSync(stamp), 'no stamp after a killed run that copied').toBe(false);

    const next = await cli(['once'], exdev);
    expect(next.code).toBe(0);
    expect(next.logs.find((line) => line.msg.startsWith('removed temporary files'))).toMatchObject({ count: 1 });
    expect(existsSync(planted)).toBe(false);
    expect(existsSync(stamp)).toBe(true);
    await expectUploadedAndArchived(later);
  });
});

describe('status and history', () => {
  it('report archived, failed and skipped files, the totals uploaded, and where each file went', async () => {
    await startServer();
    const good = new Map<string, Buffer>([
      ['a.jpg', randomBytes(1000)],
      ['b.jpg', randomBytes(3000)],
      ['sub/c.jpg', randomBytes(5000)],
    ]);
    await mkdir(join(watchDir, 'sub'));
    for (const [name, bytes] of good) await writeFile(join(watchDir, name), bytes);
    await writeFile(join(watchDir, 'empty.jpg'), '');
    await writeFile(join(watchDir, 'notes.txt'), 'not a photo');
    const extra = { SUPPORTED_EXTENSIONS: 'jpg,txt' };

    const run = await cli(['once'], extra);
    expect(run.code, run.stdout.slice(-3000)).toBe(1);
    await expectUploadedAndArchived(good);

    // Without any server: the journal commands read STATE_DIRECTORY only.
    await server?.close();
    const report = await status();
    expect(report.journal).toBe(join(stateDir, 'journal.db'));
    expect(report.running).toBe(false);
    expect(report.counts).toEqual({ archived: 3, failed: 1, skipped: 1 });
    expect(report.inProgress).toBe(0);
    expect(report.failed).toHaveLength(1);
    expect(report.failed[0]).toMatchObject({ path: join(watchDir, 'notes.txt'), attempts: 1, nextRetryAt: null });
    expect(report.failed[0]?.error).toContain('Unsupported file type notes.txt');
    expect(report.totals.ever).toEqual({ files: 3, bytes: 9000 });
    const archived = report.recent.filter((row) => row.state === 'archived');
    expect(archived).toHaveLength(3);
    for (const [name, bytes] of good) {
      expect(archived.find((row) => row.path === join(watchDir, name)), `${name} among the recent outcomes`).toMatchObject({
        bytes: bytes.length,
        assetId: assetIdOf(bytes),
        archivePath: join(archiveDir, name),
      });
    }
    expect((await status(['--recent', '2'])).recent).toHaveLength(2);

    const human = await cli(['status'], extra);
    expect(human.code).toBe(0);
    expect(() => JSON.parse(human.stdout) as unknown, 'plain status is text, not JSON').toThrow();
    expect(human.stdout).toContain(join(stateDir, 'journal.db'));

    const history = await cli(['history', 'a.jpg'], extra);
    expect(history.code).toBe(0);
    expect(history.stdout).toContain(join(archiveDir, 'a.jpg'));
    expect(history.stdout).toContain(assetIdOf(good.get('a.jpg') ?? Buffer.alloc(0)));
    expect(history.stdout).not.toContain(assetIdOf(good.get('b.jpg') ?? Buffer.alloc(0)));

    const nested = await cli(['history', 'sub/c.jpg'], extra);
    expect(nested.code).toBe(0);
    expect(nested.stdout).toContain(join(archiveDir, 'sub', 'c.jpg'));
    expect(nested.stdout).toContain(assetIdOf(good.get('sub/c.jpg') ?? Buffer.alloc(0)));

    // The address of the photo's page in Immich, pasted whole.
    const page = await cli(['history', `http://immich.local:2283/albums/x/photos/${assetIdOf(good.get('b.jpg') ?? Buffer.alloc(0))}`], extra);
    expect(page.stdout.split('\n')[0]).toMatch(new RegExp(`^${join(watchDir, 'b.jpg')} \\(.*\\): on the server \\(asset .*\\), original archived to ${join(archiveDir, 'b.jpg')}$`));

    // Nothing found: a script can tell by the exit code.
    const none = await cli(['history', 'never-seen.jpg'], extra);
    expect([none.code, none.stdout]).toEqual([1, 'no file in the journal matches "never-seen.jpg"\n']);
  });
});

describe('the journal commands as another user than the uploader', () => {
  it.skipIf(process.getuid?.() !== 0 || !cliRunsAs(NOBODY))('say they cannot read its state folder, instead of finding nothing there', async () => {
    await startServer();
    // The way to it is open, as a home folder often is; the uploader keeps its own folder private.
    await chmod(temp.path, 0o755);
    const run = watch();
    await run.waitForLog((line) => line.msg.startsWith('watching'));
    for (const command of ['status', 'history', 'retry', 'health']) {
      const args = command === 'history' ? [command, 'a.jpg'] : [command];
      const result = await runCli(args, { env: env(), user: NOBODY });
      outputs.push({ what: `${command} as nobody`, text: () => result.stdout + result.stderr });
      expect([command, result.code, result.stdout]).toEqual([command, 1, '']);
      expect(result.stderr).toBe(
        `Cannot read STATE_DIRECTORY ${stateDir}: permission denied. Fix: run this command as the user the uploader runs as (sudo -u <that user> ...), or point STATE_DIRECTORY at its state folder.\n`,
      );
    }
    expect(existsSync(join(stateDir, 'retry-request')), 'retry asked nothing of the running uploader').toBe(false);
  });
});

describe('health', () => {
  it('says whether an uploader runs and whether anything has kept it from its work for longer than the grace', async () => {
    const immich = await startServer();
    const notRunning = await cli(['health']);
    expect(notRunning.code).toBe(1);
    expect(notRunning.stdout).toMatch(/^unhealthy: no uploader is running with STATE_DIRECTORY /);

    // `watch` never gives up on the server, however short `once`'s patience.
    const run = watch({ IMMICH_AUTO_UPLOADER_ONCE_PATIENCE_MS: '100' });
    await run.waitForLog((line) => line.msg.startsWith('watching'));
    const well = await cli(['health', '--grace', '0']);
    expect([well.code, well.stdout]).toEqual([0, 'healthy: an uploader is running, and nothing keeps it from its work\n']);

    await immich.down();
    await writeMedia(watchDir, ['while-away.jpg']);
    await run.waitForLog((line) => line.msg.startsWith('Immich server is not answering'));
    const away = await cli(['health', '--grace', '0']);
    expect(away.code).toBe(1);
    expect(away.stdout).toMatch(/^unhealthy: Immich server is not answering \(.*\); uploads wait until it does \(for \d+ s, since \S+\)\n$/);
    // Within the default grace (5 minutes): an Immich restarting for an update is no alarm.
    const soon = await cli(['health']);
    expect(soon.code).toBe(0);
    expect(soon.stdout).toMatch(/^healthy for now: Immich server is not answering .* unhealthy if it lasts over 5 min\n$/);
    const human = await cli(['status']);
    expect(human.stdout).toMatch(/\nnow: Immich server is not answering .*\(for \d+ s, since /);
    expect((await status()).problems.map((problem) => problem.kind)).toEqual(['server']);

    await immich.up();
    await waitFor(() => immich.assets.length === 1, { timeoutMs: 30_000, message: 'the file to be uploaded once the server is back' });
    const back = await cli(['health', '--grace', '0']);
    expect(back.code).toBe(0);
    expect((await status()).problems).toEqual([]);

    run.child.kill('SIGTERM');
    expect((await run.exited).code).toBe(0);
    const stopped = await cli(['health']);
    expect(stopped.code).toBe(1);
    expect(existsSync(join(stateDir, 'problems.json')), 'a stopped uploader leaves no problems behind').toBe(false);
  });
});

describe('retry', () => {
  it('with no journal where it looks, says so and makes neither folder nor journal there', async () => {
    const result = await cli(['retry'], { STATE_DIRECTORY: join(temp.path, 'elsewhere') });
    expect([result.code, result.stdout]).toEqual([
      0,
      `no journal in ${join(temp.path, 'elsewhere')}: no failed file to try again (STATE_DIRECTORY comes from --state-directory, the environment, or the .env of the current folder)\n`,
    ]);
    expect(existsSync(join(temp.path, 'elsewhere'))).toBe(false);
  });

  it('without a daemon: exits 0 and makes the failed file due now; the next run uploads it', async () => {
    await startServer();
    theServer().failNext(1, 400, { path: '/api/assets', exact: true, message: 'simulated refusal' });
    const files = await writeMedia(watchDir, ['refused-once.jpg']);

    const first = await cli(['once']);
    expect(first.code, first.stdout.slice(-3000)).toBe(1);
    expect(theServer().assets).toHaveLength(0);
    const before = await status();
    expect(before.failed).toHaveLength(1);
    expect(before.failed[0]).toMatchObject({ path: join(watchDir, 'refused-once.jpg'), nextRetryAt: null });
    expect(before.failed[0]?.error).toContain('simulated refusal');
    await expectInPlace(files);

    const retried = await cli(['retry']);
    expect(retried.code, retried.stdout + retried.stderr).toBe(0);
    const after = await status();
    expect(after.failed).toHaveLength(1);
    const due = Date.parse(after.failed[0]?.nextRetryAt ?? 'not a date');
    expect(due, 'retry makes the failed file due now').toBeLessThanOrEqual(Date.now());

    const second = await cli(['once']);
    expect(second.code, second.stdout.slice(-3000)).toBe(0);
    await expectUploadedAndArchived(files);
    const done = await status();
    expect(done.failed).toEqual([]);
    expect(done.counts).toEqual({ archived: 1 });
  });

  it('with a running daemon: the daemon tries the failed file again and archives it', async () => {
    await startServer();
    const daemon = await startWatching();
    // 400 is not retried by the daemon on its own: only `retry` sends the file round again.
    theServer().failNext(1, 400, { path: '/api/assets', exact: true, message: 'simulated refusal' });
    const files = await writeMedia(watchDir, ['refused-first.jpg']);

    const failed = await waitFor(
      async () => {
        const report = await status();
        return report.failed.length === 1 ? report : undefined;
      },
      { timeoutMs: 20_000, intervalMs: 100, message: 'the journal to record the failure' },
    );
    expect(failed.running).toBe(true);
    expect(failed.failed[0]?.error).toContain('simulated refusal');
    expect(theServer().assets, 'not uploaded before the retry').toHaveLength(0);
    await expectInPlace(files);

    const retried = await cli(['retry']);
    expect(retried.code, retried.stdout + retried.stderr).toBe(0);
    // The archived copy appears (link) a moment before the original goes (unlink): wait for both.
    const archived = (): boolean =>
      existsSync(join(archiveDir, 'refused-first.jpg')) && !existsSync(join(watchDir, 'refused-first.jpg'));
    await waitFor(() => theServer().assets.length === 1 && archived(), {
      timeoutMs: 20_000,
      message: 'the daemon to upload and archive the retried file',
    });
    await expectUploadedAndArchived(files);
    expect(existsSync(join(stateDir, 'retry-request')), 'the daemon took the request').toBe(false);

    const report = await waitFor(
      async () => {
        const now = await status();
        return now.counts.archived === 1 ? now : undefined;
      },
      { timeoutMs: 10_000, intervalMs: 100, message: 'the journal to record the archive' },
    );
    expect(report.failed).toEqual([]);
    expect(report.counts).toEqual({ archived: 1 });
    expect(report.running).toBe(true);
    expect(await stopGracefully(daemon)).toBe(0);
  });
});

describe('one instance per STATE_DIRECTORY', () => {
  it('a second instance refuses to start and touches nothing; the first stops with 0', async () => {
    await startServer();
    const first = await startWatching();
    expect((await status()).running).toBe(true);
    // Its own watch folder, so whatever it did would be its own doing, not the daemon's.
    const otherDir = join(temp.path, 'other-inbox');
    const files = await writeMedia(otherDir, ['second.jpg']);
    const before = theServer().requests.length;

    const second = await cli(['once'], { WATCH_DIRECTORIES: otherDir });
    expect(second.code).toBe(1);
    const said = second.stdout + second.stderr;
    expect(said).toMatch(/another immich-auto-uploader .* is already running/);
    expect(said).toContain(`STATE_DIRECTORY ${stateDir}`);
    expect(theServer().requests.slice(before), 'the refused instance never called the server').toEqual([]);
    expect(sha1((await readIfExists(join(otherDir, 'second.jpg'))) ?? Buffer.alloc(0))).toBe(sha1(files.get('second.jpg') ?? Buffer.alloc(1)));

    expect(await stopGracefully(first)).toBe(0);
    expect((await status()).running).toBe(false);
    // Once the first has stopped, the same run goes through.
    const after = await cli(['once'], { WATCH_DIRECTORIES: otherDir });
    expect(after.code, after.stdout.slice(-3000)).toBe(0);
    expectOnServerOnce('second.jpg', files.get('second.jpg') ?? Buffer.alloc(0));
    expect(existsSync(join(otherDir, 'second.jpg'))).toBe(false);
  });

  it('the lock of a SIGKILLed daemon never blocks the restart', async () => {
    await startServer();
    const killed = await startWatching();
    killed.child.kill('SIGKILL');
    expect((await killed.exited).signal).toBe('SIGKILL');
    expect((await status()).running, 'a killed daemon holds no lock').toBe(false);
    const files = await writeMedia(watchDir, ['after-kill.jpg']);

    const restart = await cli(['once']);
    expect(restart.code, restart.stdout.slice(-3000) + restart.stderr).toBe(0);
    await expectUploadedAndArchived(files);
  });
});

describe('a journal this program cannot use as it is', () => {
  it('refuses a journal from a newer schema with exit 1 and leaves it byte for byte', async () => {
    await startServer();
    await mkdir(stateDir, { recursive: true });
    const journalFile = join(stateDir, 'journal.db');
    const db = openDatabase(journalFile);
    db.pragma('journal_mode = WAL');
    db.exec("CREATE TABLE from_the_future (note TEXT); INSERT INTO from_the_future VALUES ('written by release 99');");
    db.pragma('user_version = 99');
    db.close();
    const original = await readFile(journalFile);
    const files = await writeMedia(watchDir, ['untouched.jpg']);

    const run = await cli(['once']);
    expect(run.code).toBe(1);
    expect(run.stdout + run.stderr).toMatch(/schema version 99/);
    const readOnly = await cli(['status']);
    expect(readOnly.code).toBe(1);
    expect(readOnly.stderr).toMatch(/schema version 99/);
    const checked = await cli(['check']);
    expect(checked.code).toBe(1);
    expect(checked.stdout).toMatch(/FAILED\s+journal readable: .*schema version 99/);
    const retry = await cli(['retry']);
    expect(retry.code).toBe(1);
    expect(retry.stdout + retry.stderr).toMatch(/schema version 99/);

    expect((await readFile(journalFile)).equals(original), 'the newer journal is left byte for byte').toBe(true);
    expect((await readdir(stateDir)).filter((name) => name.includes('corrupt')), 'not mistaken for a damaged journal').toEqual([]);
    await expectInPlace(files);
    expect(existsSync(archiveDir)).toBe(false);
    expect(theServer().requests.filter((request) => request.path.startsWith('/api/assets'))).toEqual([]);
  });

  it('moves a damaged journal aside with a warning, starts a new one, and the run succeeds', async () => {
    await startServer();
    await mkdir(stateDir, { recursive: true });
    const garbage = randomBytes(16 * 1024);
    await writeFile(join(stateDir, 'journal.db'), garbage);
    const files = await writeMedia(watchDir, ['after-damage.jpg']);
    // The commands that only read it say what the next run does about it.
    const readOnly = await cli(['status']);
    expect(readOnly.code).toBe(1);
    expect(readOnly.stderr).toMatch(/Cannot read the journal .*: it is damaged \(.*\)\. The next `once` or `watch` moves it aside and starts a new one/);

    const run = await cli(['once']);
    expect(run.code, run.stdout.slice(-3000) + run.stderr).toBe(0);
    await expectUploadedAndArchived(files);

    const aside = (await readdir(stateDir)).filter((name) => name.startsWith('journal.db.corrupt-'));
    expect(aside).toHaveLength(1);
    const movedTo = join(stateDir, aside[0] ?? '');
    expect((await readFile(movedTo)).equals(garbage), 'the damaged journal is kept as it was').toBe(true);
    const warning = run.logs.find((line) => line.level === 40 && line.movedTo === movedTo);
    expect(warning, 'a warning naming where the damaged journal went').toBeDefined();

    const report = await status();
    expect(report.counts).toEqual({ archived: 1 });
    expect(report.totals.ever).toEqual({ files: 1, bytes: files.get('after-damage.jpg')?.length });
  });
});
