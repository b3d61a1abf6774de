import { createHash } from 'node:crypto';
import { mkdir, realpath, symlink, writeFile, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, redactedConfig, type LoadConfigInput, type LoadedConfig } from '../../src/config.js';
import { addOptions, MAX_TIMER_SECONDS, OPTIONS } from '../../src/options.js';
import type { AwayDisk } from '../../src/support/mount-table.js';
import { thrownBy } from '../helpers/expect-error.js';
import { makeTempDir } from '../helpers/temp-dir.js';

/** Distinctive, so that a leak anywhere is easy to spot. */
const SECRET = 'sekr1t-K3Y-zz9Qx7-do-not-print';

let tmp: { path: string; remove: () => Promise<void> };
let root: string;
let home: string;
let cwd: string;

beforeEach(async () => {
  tmp = await makeTempDir('iau-config-');
  // realpath: on macOS the temp folder lives behind the /var -> /private/var symlink.
  root = await realpath(tmp.path);
  home = join(root, 'home');
  cwd = join(root, 'work');
  await mkdir(join(home, 'Downloads'), { recursive: true });
  await mkdir(join(home, 'Pictures', 'Camera'), { recursive: true });
  await mkdir(cwd, { recursive: true });
});

afterEach(async () => {
  await tmp.remove();
});

function input(over: Partial<LoadConfigInput> = {}): LoadConfigInput {
  return {
    flags: {},
    env: { IMMICH_API_URL: 'http://immich.test:2283', IMMICH_API_KEY: SECRET },
    cwd,
    homeDir: home,
    ...over,
  };
}

function load(over: Partial<LoadConfigInput> = {}): LoadedConfig {
  return loadConfig(input(over));
}

/** The env of `input()` plus `extra`. */
function env(extra: Record<string, string | undefined>): Record<string, string | undefined> {
  return { ...input().env, ...extra };
}

/**
 * The problems loadConfig throws. Also checks the promise every message makes: it names what
 * was expected and how to fix it, and never contains the API key.
 */
function problemsOf(over: Partial<LoadConfigInput>): string[] {
  try {
    load(over);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    const { problems, message } = error as ConfigError;
    expect(problems.length).toBeGreaterThan(0);
    expect(message).toBe(problems.join('\n'));
    for (const problem of problems) {
      expect(problem).toMatch(/expected .+, got .+; fix: ./);
      expect(problem).not.toContain('\n');
      expect(problem).not.toContain(SECRET);
    }
    return problems;
  }
  throw new Error('expected loadConfig to throw a ConfigError');
}

/** The only problem; fails when there are more or none. */
function problemOf(over: Partial<LoadConfigInput>): string {
  const problems = problemsOf(over);
  expect(problems).toHaveLength(1);
  return problems[0] ?? '';
}

describe('defaults', () => {
  it('applies every documented default', () => {
    const { config, notes } = load();
    const archive = join(home, 'Pictures', 'Archived');
    expect(config.apiUrl).toBe('http://immich.test:2283/api');
    expect(config.apiKey).toBe(SECRET);
    expect(config.archiveDirectory).toBe(archive);
    expect(config.watchRoots).toEqual([
      { path: join(home, 'Downloads'), archivePath: join(archive, 'Downloads') },
      { path: join(home, 'Pictures', 'Camera'), archivePath: join(archive, 'Camera') },
    ]);
    expect(config.watchRecursive).toBe(true);
    expect([...config.supportedExtensions]).toEqual(
      ['jpg', 'jpeg', 'png', 'gif', 'bmp', 'tiff', 'webp', 'mp4', 'mov', 'avi', 'mkv', 'wmv', 'flv', 'm4v', '3gp'].map(
        (e) => `.${e}`,
      ),
    );
    expect(config.maxFileSizeBytes).toBe(1000 * 1024 * 1024);
    expect(config.fileStabilityWaitMs).toBe(5000);
    expect(config.fileStabilityCheckIntervalMs).toBe(1000);
    expect(config.logLevel).toBe('info');
    expect(config.uploadConcurrency).toBe(4);
    expect(config.logFormat).toBe('auto');
    expect(config.rescanIntervalMs).toBe(300_000);
    expect(config.watchPolling).toBe(false);
    expect(config.watchPollIntervalMs).toBe(10_000);
    expect(config.shutdownGraceMs).toBe(30_000);
    expect(config.removeEmptyFolders).toBe(false);
    expect(config.excludedPaths).toEqual([]);
    expect(notes).toEqual([]);
  });

  it('returns a deeply frozen config whose extension set cannot change', () => {
    const { config } = load();
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.watchRoots)).toBe(true);
    for (const root of config.watchRoots) expect(Object.isFrozen(root)).toBe(true);
    expect(Object.isFrozen(config.excludedPaths)).toBe(true);
    const extensions = config.supportedExtensions as Set<string>;
    expect(() => extensions.add('.exe')).toThrow(TypeError);
    expect(() => extensions.delete('.jpg')).toThrow(TypeError);
    expect(() => extensions.clear()).toThrow(TypeError);
    expect(config.supportedExtensions.has('.exe')).toBe(false);
    expect(() => {
      (config as { uploadConcurrency: number }).uploadConcurrency = 9;
    }).toThrow(TypeError);
  });
});

describe('precedence: flag > environment > .env > default', () => {
  beforeEach(async () => {
    await writeFile(join(cwd, '.env'), 'UPLOAD_CONCURRENCY=2\nLOG_LEVEL=debug\n');
  });

  it('takes each value from the highest level that sets it', () => {
    expect(load().config.uploadConcurrency).toBe(2);
    expect(load({ env: env({ UPLOAD_CONCURRENCY: '3' }) }).config.uploadConcurrency).toBe(3);
    expect(load({ env: env({ UPLOAD_CONCURRENCY: '3' }), flags: { uploadConcurrency: '5' } }).config.uploadConcurrency).toBe(5);
    // Levels are per option: the flag for one does not hide the .env value of another.
    expect(load({ flags: { uploadConcurrency: '5' } }).config.logLevel).toBe('debug');
  });

  it('falls back to the default when no level sets the value', async () => {
    await writeFile(join(cwd, '.env'), '');
    expect(load().config.uploadConcurrency).toBe(4);
  });

  it('treats an empty value as not set at that level', () => {
    expect(load({ env: env({ UPLOAD_CONCURRENCY: '' }) }).config.uploadConcurrency).toBe(2);
    expect(load({ env: env({ UPLOAD_CONCURRENCY: '   ' }), flags: { uploadConcurrency: '' } }).config.uploadConcurrency).toBe(2);
  });

  it('reads required values from .env alone', async () => {
    await writeFile(join(cwd, '.env'), `IMMICH_API_URL=http://from-file:2283\nIMMICH_API_KEY=${SECRET}\n`);
    const { config, notes } = load({ env: {} });
    expect(config.apiUrl).toBe('http://from-file:2283/api');
    expect(config.apiKey).toBe(SECRET);
    expect(notes).toEqual([]);
  });

  it('notes a mistyped option in .env or the environment, which is ignored, and names the option meant', async () => {
    await writeFile(join(cwd, '.env'), 'WATCH_DIRECTORY=/photos\nAFTER_UPLAOD=keep\nARCHIVE_DIR=/archive\nTZ=Europe/Paris\nUPLOAD_LOCATION=./library\n');
    const { config, notes } = load({ env: env({ LOG_LEVLE: 'debug', PATH: '/usr/bin', HOME: '/home/me' }) });
    expect(config.afterUpload).toBe('move');
    expect(notes).toEqual([
      `${join(cwd, '.env')} sets WATCH_DIRECTORY, which is not an option, and is ignored: did you mean WATCH_DIRECTORIES?`,
      `${join(cwd, '.env')} sets AFTER_UPLAOD, which is not an option, and is ignored: did you mean AFTER_UPLOAD?`,
      `${join(cwd, '.env')} sets ARCHIVE_DIR, which is not an option, and is ignored: did you mean ARCHIVE_DIRECTORY?`,
      'the environment sets LOG_LEVLE, which is not an option, and is ignored: did you mean LOG_LEVEL?',
    ]);
  });

  it('keeps the note of a mistyped option with the problems when the default it left in place does not work', async () => {
    await writeFile(join(cwd, '.env'), `WATCH_DIRECTORY=${cwd}\n`);
    const error = thrownBy(ConfigError, () => load({ env: env({ WATCH_DIRECTORIES: undefined }), homeDir: join(root, 'no-home') }));
    expect(error.problems[0]).toMatch(/^WATCH_DIRECTORIES: expected existing folders/);
    expect(error.notes).toEqual([`${join(cwd, '.env')} sets WATCH_DIRECTORY, which is not an option, and is ignored: did you mean WATCH_DIRECTORIES?`]);
  });

  it('leaves xmp out of SUPPORTED_EXTENSIONS, with a note: a sidecar goes with its photo', async () => {
    // A watch folder of that name is a folder like any other.
    await mkdir(join(cwd, 'xmp'));
    const { config, notes } = load({ env: env({ SUPPORTED_EXTENSIONS: 'jpg,.XMP,heic', WATCH_DIRECTORIES: 'xmp' }) });
    expect([...config.supportedExtensions]).toEqual(['.jpg', '.heic']);
    expect(config.watchRoots.map((root) => root.path)).toEqual([await realpath(join(cwd, 'xmp'))]);
    expect(notes).toEqual(['SUPPORTED_EXTENSIONS lists xmp, which is ignored: an XMP sidecar goes to the server with its photo, never on its own']);
    expect(problemsOf({ env: env({ SUPPORTED_EXTENSIONS: 'xmp' }) })).toEqual([expect.stringMatching(/^SUPPORTED_EXTENSIONS: expected comma-separated file extensions such as jpg,mp4, got "xmp" \(no extensions\)/)]);
  });

  it('reads the .env named by envFile instead of <cwd>/.env', async () => {
    const other = join(root, 'other.env');
    await writeFile(other, 'UPLOAD_CONCURRENCY=7\n');
    expect(load({ envFile: other }).config.uploadConcurrency).toBe(7);
  });

  it('takes flags as commander gives them from argv', () => {
    const command = new Command();
    addOptions(command);
    command.parse(
      ['--api-url', 'https://flag.example/', '--watch-polling', '--watch-recursive', 'off', '--upload-concurrency', '8'],
      { from: 'user' },
    );
    const { config } = load({ flags: command.opts() });
    expect(config.apiUrl).toBe('https://flag.example/api');
    expect(config.watchPolling).toBe(true);
    expect(config.watchRecursive).toBe(false);
    expect(config.uploadConcurrency).toBe(8);
    expect(config.logLevel).toBe('debug'); // still from .env
  });

  it('does not mutate the environment it is given', () => {
    const given = env({ LOG_LEVEL: 'warn' });
    const copy = { ...given };
    load({ env: given });
    expect(given).toEqual(copy);
    expect(process.env.UPLOAD_CONCURRENCY).toBeUndefined();
  });
});

describe('IMMICH_API_URL', () => {
  it.each([
    ['http://host:2283', 'http://host:2283/api'],
    ['http://host:2283/', 'http://host:2283/api'],
    ['http://host:2283/api', 'http://host:2283/api'],
    ['http://host:2283/api/', 'http://host:2283/api'],
    ['http://host:2283/api//', 'http://host:2283/api'],
    ['https://photos.example.com', 'https://photos.example.com/api'],
    ['HTTPS://Photos.Example.com:443/API/', 'https://photos.example.com/api'],
    ['http://host/immich', 'http://host/immich/api'],
    ['http://host/immich/api/', 'http://host/immich/api'],
    ['  http://192.168.1.5:2283/  ', 'http://192.168.1.5:2283/api'],
    ['http://[::1]:2283', 'http://[::1]:2283/api'],
  ])('normalises %j to %j', (given, expected) => {
    expect(load({ env: env({ IMMICH_API_URL: given }) }).config.apiUrl).toBe(expected);
  });

  it('reports a missing URL', () => {
    const problem = problemOf({ env: { IMMICH_API_KEY: SECRET } });
    expect(problem).toMatch(/^IMMICH_API_URL: expected the URL of your Immich server, got nothing; fix: set IMMICH_API_URL=/);
  });

  it.each([
    ['ftp://host:2283', /got "ftp:\/\/host:2283" \(scheme ftp\)/],
    ['not a url', /got "not a url" \(not a URL\)/],
    ['immich.local:2283', /got "immich.local:2283" \(no http:\/\/ or https:\/\/\); fix: set IMMICH_API_URL=http:\/\/immich.local:2283$/],
    ['http://host:2283/?x=1', /\?query or #fragment/],
  ])('refuses %j', (given, pattern) => {
    const problem = problemOf({ env: env({ IMMICH_API_URL: given }) });
    expect(problem).toMatch(/^IMMICH_API_URL: expected an http:\/\/ or https:\/\/ URL/);
    expect(problem).toMatch(pattern);
  });

  it('refuses credentials in the URL without echoing them', () => {
    const problem = problemOf({ env: env({ IMMICH_API_URL: `https://me:${SECRET}@host/` }) });
    expect(problem).toContain('user name or password');
    expect(problem).toContain('https://***@host/');
  });

  it('names the flag when the bad value came from one', () => {
    const problem = problemOf({ flags: { apiUrl: 'ftp://x' } });
    expect(problem).toMatch(/^IMMICH_API_URL \(from --api-url\): .*fix: pass --api-url http/);
  });
});

describe('IMMICH_API_KEY and IMMICH_API_KEY_FILE', () => {
  it('reports a missing key', () => {
    const problem = problemOf({ env: { IMMICH_API_URL: 'http://h' } });
    expect(problem).toMatch(/^IMMICH_API_KEY: expected an Immich API key .*got nothing; fix: .*IMMICH_API_KEY_FILE=/);
  });

  it('reads the key file and trims surrounding whitespace', async () => {
    const file = join(root, 'key.txt');
    await writeFile(file, `\n  ${SECRET}\r\n`);
    expect(load({ env: { IMMICH_API_URL: 'http://h', IMMICH_API_KEY_FILE: file } }).config.apiKey).toBe(SECRET);
  });

  it('expands ~ and resolves relative key-file paths against cwd', async () => {
    await writeFile(join(home, 'key'), SECRET);
    await writeFile(join(cwd, 'key'), `${SECRET}-cwd`);
    expect(load({ env: { IMMICH_API_URL: 'http://h', IMMICH_API_KEY_FILE: '~/key' } }).config.apiKey).toBe(SECRET);
    expect(load({ env: { IMMICH_API_URL: 'http://h', IMMICH_API_KEY_FILE: 'key' } }).config.apiKey).toBe(`${SECRET}-cwd`);
  });

  it('reports a missing, unreadable or empty key file', async () => {
    const missing = join(root, 'nope');
    expect(problemOf({ env: { IMMICH_API_URL: 'http://h', IMMICH_API_KEY_FILE: missing } })).toMatch(
      /^IMMICH_API_KEY_FILE: expected a readable file holding the API key, got ".*nope", which does not exist; fix:/,
    );
    expect(problemOf({ env: { IMMICH_API_URL: 'http://h', IMMICH_API_KEY_FILE: root } })).toContain('which is a folder');
    const empty = join(root, 'empty');
    await writeFile(empty, ' \n\n');
    expect(problemOf({ env: { IMMICH_API_URL: 'http://h', IMMICH_API_KEY_FILE: empty } })).toMatch(
      /^IMMICH_API_KEY_FILE: expected a file holding the API key, got ".*empty", which is empty; fix: write the API key into /,
    );
  });

  it.skipIf(process.getuid?.() === 0)('reports a key file without read permission', async () => {
    const locked = join(root, 'locked');
    await writeFile(locked, SECRET);
    await chmod(locked, 0o000);
    expect(problemOf({ env: { IMMICH_API_URL: 'http://h', IMMICH_API_KEY_FILE: locked } })).toContain('permission denied');
  });

  it('refuses both at the same level, and says to give only one', async () => {
    const file = join(root, 'key');
    await writeFile(file, SECRET);
    expect(problemOf({ env: env({ IMMICH_API_KEY_FILE: file }) })).toMatch(
      /^IMMICH_API_KEY and IMMICH_API_KEY_FILE: expected only one of them, got both; fix: remove one/,
    );
    expect(problemOf({ flags: { apiKey: SECRET, apiKeyFile: file } })).toMatch(/\(from --api-key and --api-key-file\)/);
  });

  it('lets a higher level choose between key and key file', async () => {
    const file = join(root, 'key');
    await writeFile(file, `${SECRET}-file`);
    await writeFile(join(cwd, '.env'), `IMMICH_API_KEY=${SECRET}-dotenv\n`);
    expect(load({ env: { IMMICH_API_URL: 'http://h' }, flags: { apiKeyFile: file } }).config.apiKey).toBe(`${SECRET}-file`);
    expect(load({ env: { IMMICH_API_URL: 'http://h', IMMICH_API_KEY_FILE: file } }).config.apiKey).toBe(`${SECRET}-file`);
    expect(load({ env: { IMMICH_API_URL: 'http://h' } }).config.apiKey).toBe(`${SECRET}-dotenv`);
  });

  it('refuses a key with spaces or control characters, saying (hidden) instead of the key', () => {
    const problem = problemOf({ env: env({ IMMICH_API_KEY: `${SECRET} ${SECRET}` }) });
    expect(problem).toMatch(/^IMMICH_API_KEY: expected an API key .*got the key \(hidden\)/);
  });

  it('hides a key written on the line of another setting, and says to give each its own line', async () => {
    await writeFile(join(cwd, '.env'), `IMMICH_API_URL=http://nas:2283 IMMICH_API_KEY=${SECRET}\n`);
    const problems = problemsOf({ env: {} });
    expect(problems[0]).toMatch(/^IMMICH_API_URL \(from .*\): expected .*, got "http:\/\/nas:2283 IMMICH_API_KEY=\(hidden\)" .*\(this value holds another setting: give each its own line\)$/);
    await writeFile(join(cwd, '.env'), '');
  });

  it("takes off the quotes Docker Compose's list form leaves around a value, with a note", () => {
    const { config, notes } = load({ env: { IMMICH_API_URL: "'http://nas:2283'", IMMICH_API_KEY: `"${SECRET}"`, WATCH_DIRECTORIES: `"${join(home, 'Downloads')}"` } });
    expect([config.apiUrl, config.apiKey, config.watchRoots[0]?.path]).toEqual(['http://nas:2283/api', SECRET, join(home, 'Downloads')]);
    expect(notes).toContain("IMMICH_API_KEY was given in quotes, which were taken off (in Docker Compose's list form, write - IMMICH_API_KEY=<value> without them)");
    expect(notes.filter((note) => note.includes('in quotes'))).toHaveLength(3);
  });

  it('refuses a key file holding a line of .env, or the key in quotes, without showing it', async () => {
    const file = join(root, 'key');
    for (const [contents, extra] of [[`IMMICH_API_KEY=${SECRET}\n`, "the variable's name before it"], [`"${SECRET}"`, 'quotes around it']]) {
      await writeFile(file, contents ?? '');
      expect(problemOf({ env: { IMMICH_API_URL: 'http://h', IMMICH_API_KEY_FILE: file } })).toBe(
        `IMMICH_API_KEY_FILE: expected the API key alone, got the contents of ${file} (hidden), with ${extra}; fix: leave only the key itself there`,
      );
    }
  });

  it('notes that a key given as a flag is visible to other users', () => {
    const { config, notes } = load({ env: { IMMICH_API_URL: 'http://h' }, flags: { apiKey: SECRET } });
    expect(config.apiKey).toBe(SECRET);
    expect(notes.join('\n')).toContain('process list');
  });

  it('never shows the key in problems, notes, error text or the redacted config', async () => {
    const file = join(root, 'key');
    await writeFile(file, `${SECRET}\twith-a-tab`);
    await writeFile(join(cwd, '.env'), `IMMICH_API_KEY ${SECRET}\nIMMICH_API_KEY_FILE="${SECRET}\n`);
    const outputs: string[] = [];
    const attempts: Partial<LoadConfigInput>[] = [
      // The key pasted into the wrong variables: blanked out wherever it would be echoed.
      { env: env({ MAX_FILE_SIZE_MB: SECRET, IMMICH_API_URL: SECRET, LOG_LEVEL: `x${SECRET}x` }) },
      { env: env({ IMMICH_API_KEY: `${SECRET}\u0000` }) },
      { env: env({ IMMICH_API_KEY_FILE: file }) },
      { env: { IMMICH_API_KEY_FILE: file }, flags: { apiUrl: 'nope' } },
      { env: { IMMICH_API_URL: 'http://h', IMMICH_API_KEY_FILE: SECRET } },
      { flags: { apiKey: `${SECRET} x`, apiKeyFile: file } },
    ];
    for (const attempt of attempts) {
      try {
        const { config, notes } = load(attempt);
        outputs.push(...notes, JSON.stringify(redactedConfig(config)));
      } catch (error) {
        outputs.push(String(error), (error as Error).stack ?? '', JSON.stringify(error));
      }
    }
    await writeFile(join(cwd, '.env'), '');
    const { config, notes } = load({ flags: { apiKey: SECRET } });
    outputs.push(...notes, JSON.stringify(redactedConfig(config)));
    expect(outputs.length).toBeGreaterThan(attempts.length);
    for (const output of outputs) expect(output).not.toContain(SECRET.slice(0, 12));
  });
});

describe('numbers, booleans and enumerations', () => {
  it.each([
    ['MAX_FILE_SIZE_MB', '0.5', 'maxFileSizeBytes', 512 * 1024],
    ['MAX_FILE_SIZE_MB', '2048', 'maxFileSizeBytes', 2048 * 1024 * 1024],
    ['FILE_STABILITY_WAIT_SECONDS', '0', 'fileStabilityWaitMs', 0],
    ['FILE_STABILITY_WAIT_SECONDS', '2.5', 'fileStabilityWaitMs', 2500],
    ['FILE_STABILITY_CHECK_INTERVAL', '0.05', 'fileStabilityCheckIntervalMs', 50],
    ['FILE_STABILITY_CHECK_INTERVAL', '.25', 'fileStabilityCheckIntervalMs', 250],
    ['UPLOAD_CONCURRENCY', '1', 'uploadConcurrency', 1],
    ['UPLOAD_CONCURRENCY', '32', 'uploadConcurrency', 32],
    ['RESCAN_INTERVAL_SECONDS', '0.5', 'rescanIntervalMs', 500],
    ['WATCH_POLL_INTERVAL_SECONDS', '60', 'watchPollIntervalMs', 60_000],
    ['SHUTDOWN_GRACE_SECONDS', '0', 'shutdownGraceMs', 0],
    ['SHUTDOWN_GRACE_SECONDS', String(MAX_TIMER_SECONDS), 'shutdownGraceMs', MAX_TIMER_SECONDS * 1000],
    ['LOG_LEVEL', 'WARNING', 'logLevel', 'warn'],
    ['LOG_LEVEL', 'Debug', 'logLevel', 'debug'],
    ['LOG_LEVEL', 'silent', 'logLevel', 'silent'],
    ['LOG_FORMAT', 'JSON', 'logFormat', 'json'],
    ['LOG_FORMAT', 'pretty', 'logFormat', 'pretty'],
  ])('accepts %s=%s', (name, value, field, expected) => {
    const { config } = load({ env: env({ [name]: value }) });
    expect(config[field as keyof typeof config]).toBe(expected);
  });

  it.each([
    ['true', true],
    ['TRUE', true],
    ['1', true],
    ['yes', true],
    ['On', true],
    ['false', false],
    ['False', false],
    ['0', false],
    ['no', false],
    ['OFF', false],
  ])('reads the boolean %j', (value, expected) => {
    const { config } = load({ env: env({ WATCH_RECURSIVE: value, WATCH_POLLING: value, REMOVE_EMPTY_FOLDERS: value }) });
    expect(config.watchRecursive).toBe(expected);
    expect(config.watchPolling).toBe(expected);
    expect(config.removeEmptyFolders).toBe(expected);
  });

  it('notes that REMOVE_EMPTY_FOLDERS does nothing in keep mode, where it is off', () => {
    const { config, notes } = load({ env: env({ REMOVE_EMPTY_FOLDERS: 'true', AFTER_UPLOAD: 'keep' }) });
    expect(config.removeEmptyFolders).toBe(false);
    expect(notes).toEqual(['REMOVE_EMPTY_FOLDERS has no effect with AFTER_UPLOAD=keep: files stay, and so do their folders']);
    expect(load({ env: env({ REMOVE_EMPTY_FOLDERS: 'true', AFTER_UPLOAD: 'delete' }) }).config.removeEmptyFolders).toBe(true);
  });

  it('reads a bare boolean flag as true and a valued one as given', () => {
    expect(load({ flags: { watchPolling: true } }).config.watchPolling).toBe(true);
    expect(load({ flags: { watchRecursive: 'false' } }).config.watchRecursive).toBe(false);
  });

  /** At least one bad value for every option that has a parser of its own. */
  const BAD: Record<string, string[]> = {
    IMMICH_API_URL: ['ftp://x'],
    WATCH_DIRECTORIES: [',', '/definitely/not/here', '/'],
    ARCHIVE_DIRECTORY: ['/dev/null'],
    WATCH_RECURSIVE: ['maybe', '2'],
    SUPPORTED_EXTENSIONS: [',,', 'tar.gz', 'jp g', '*', '*.jpg'],
    MAX_FILE_SIZE_MB: ['abc', '0', '-5', '1e3', 'Infinity'],
    FILE_STABILITY_WAIT_SECONDS: ['-1', 'five', '1,5'],
    FILE_STABILITY_CHECK_INTERVAL: ['0', '0.01', 'x'],
    LOG_LEVEL: ['verbose', 'warnings'],
    UPLOAD_CONCURRENCY: ['0', '33', '2.5', 'four'],
    LOG_FORMAT: ['xml'],
    RESCAN_INTERVAL_SECONDS: ['0', '-1', String(MAX_TIMER_SECONDS + 1)],
    WATCH_POLLING: ['sometimes'],
    REMOVE_EMPTY_FOLDERS: ['emptied'],
    WATCH_POLL_INTERVAL_SECONDS: ['0', 'ten'],
    SHUTDOWN_GRACE_SECONDS: ['-0.5', 'soon'],
    AFTER_UPLOAD: ['archive', 'remove'],
    STATE_DIRECTORY: ['/dev/null'],
  };

  it('has bad values for every option except the key pair (tested above)', () => {
    const all = OPTIONS.map((o) => o.env).filter((name) => name !== 'IMMICH_API_KEY' && name !== 'IMMICH_API_KEY_FILE');
    expect(Object.keys(BAD).sort()).toEqual([...all].sort());
  });

  it.each(Object.entries(BAD).flatMap(([name, values]) => values.map((value) => [name, value] as const)))(
    'refuses %s=%j with a message naming it',
    (name, value) => {
      const problem = problemOf({ env: env({ [name]: value }) });
      expect(problem.startsWith(`${name}: expected `)).toBe(true);
      expect(problem).toContain(JSON.stringify(value));
    },
  );

  it('words the number messages as promised', () => {
    expect(problemOf({ env: env({ MAX_FILE_SIZE_MB: 'abc' }) })).toBe(
      'MAX_FILE_SIZE_MB: expected a positive number of megabytes, got "abc"; fix: set MAX_FILE_SIZE_MB=1000 or another number',
    );
    expect(problemOf({ env: env({ FILE_STABILITY_CHECK_INTERVAL: '0.01' }) })).toContain('at least 0.05');
    expect(problemOf({ env: env({ RESCAN_INTERVAL_SECONDS: '9999999' }) })).toContain(`at most ${MAX_TIMER_SECONDS} seconds`);
    expect(problemOf({ env: env({ UPLOAD_CONCURRENCY: '33' }) })).toContain('a whole number from 1 to 32');
    expect(problemOf({ env: env({ LOG_LEVEL: 'loud' }) })).toBe(
      'LOG_LEVEL: expected one of trace, debug, info, warn, error, fatal, silent (any case), got "loud"; fix: set LOG_LEVEL=INFO',
    );
  });

  it('points the fix at the place the bad value came from', async () => {
    await writeFile(join(cwd, '.env'), 'MAX_FILE_SIZE_MB=big\n');
    expect(problemOf({})).toBe(
      `MAX_FILE_SIZE_MB (from ${join(cwd, '.env')}): expected a positive number of megabytes, got "big"; fix: set MAX_FILE_SIZE_MB=1000 in ${join(cwd, '.env')} or another number`,
    );
    expect(problemOf({ flags: { maxFileSizeMb: '-1' } })).toBe(
      'MAX_FILE_SIZE_MB (from --max-file-size-mb): expected a positive number of megabytes, got "-1"; fix: pass --max-file-size-mb 1000 or another number',
    );
  });
});

describe('AFTER_UPLOAD and STATE_DIRECTORY', () => {
  it('defaults to move, and to the XDG state folder when XDG_STATE_HOME is set', () => {
    const { config } = load({});
    expect(config.afterUpload).toBe('move');
    expect(config.stateDirectory).toBe(join(home, '.local/state/immich-auto-uploader'));
    const xdg = load({ env: env({ XDG_STATE_HOME: join(home, 'xdg') }) }).config;
    expect(xdg.stateDirectory).toBe(join(home, 'xdg', 'immich-auto-uploader'));
    const given = load({ env: env({ XDG_STATE_HOME: join(home, 'xdg'), STATE_DIRECTORY: join(home, 'mine') }) }).config;
    expect(given.stateDirectory).toBe(join(home, 'mine'));
  });

  it('accepts delete and keep in any case', () => {
    expect(load({ env: env({ AFTER_UPLOAD: 'Delete' }) }).config.afterUpload).toBe('delete');
    expect(load({ flags: { afterUpload: 'KEEP' } }).config.afterUpload).toBe('keep');
  });

  it('ignores where the archive is when nothing is moved there', () => {
    const watch = join(home, 'Downloads');
    expect(() => load({ env: env({ WATCH_DIRECTORIES: watch, AFTER_UPLOAD: 'keep', ARCHIVE_DIRECTORY: watch }) })).not.toThrow();
    expect(problemOf({ env: env({ WATCH_DIRECTORIES: watch, ARCHIVE_DIRECTORY: watch }) })).toContain('ARCHIVE_DIRECTORY');
  });

  it('never watches a state folder placed inside a watch folder', () => {
    const watch = join(home, 'Downloads');
    const { config } = load({ env: env({ WATCH_DIRECTORIES: watch, STATE_DIRECTORY: join(watch, '.state') }) });
    expect(config.excludedPaths).toContain(join(watch, '.state'));
  });

  it('refuses a state folder that is a watch folder or the archive, or holds one: it is made private to this user', () => {
    const watch = join(home, 'Downloads');
    const archive = join(home, 'Pictures', 'Uploaded');
    const given = (state: string): string => problemOf({ env: env({ WATCH_DIRECTORIES: watch, ARCHIVE_DIRECTORY: archive, STATE_DIRECTORY: state }) });
    expect(given(watch)).toMatch(/^STATE_DIRECTORY: expected a folder of its own, made private to this user, got .*Downloads, the watch folder itself; fix: set STATE_DIRECTORY=<a folder of its own>/);
    expect(given(archive)).toContain('Uploaded, the archive itself;');
    expect(given(home)).toContain(`${home}, a folder holding the watch folder ${watch};`);
    expect(given(join(home, 'Pictures'))).toContain(`a folder holding the archive ${archive};`);
    expect(load({ env: env({ WATCH_DIRECTORIES: watch, ARCHIVE_DIRECTORY: archive, STATE_DIRECTORY: join(archive, '.state') }) }).config.stateDirectory).toBe(join(archive, '.state'));
    // Where nothing is moved, the archive is not used.
    expect(load({ env: env({ WATCH_DIRECTORIES: watch, ARCHIVE_DIRECTORY: archive, STATE_DIRECTORY: join(home, 'Pictures'), AFTER_UPLOAD: 'keep' }) }).config.stateDirectory).toBe(join(home, 'Pictures'));
  });
});

describe('SUPPORTED_EXTENSIONS', () => {
  it('lower-cases, adds the dot, trims, skips empty entries and dedupes', () => {
    const { config } = load({ env: env({ SUPPORTED_EXTENSIONS: ' JPG, .Png,heic,,.jpg, MP4 ' }) });
    expect([...config.supportedExtensions]).toEqual(['.jpg', '.png', '.heic', '.mp4']);
  });
});

describe('folders', () => {
  it('expands ~, resolves relative paths against cwd and dedupes', async () => {
    await mkdir(join(cwd, 'incoming'));
    await symlink(join(cwd, 'incoming'), join(home, 'link-to-incoming'));
    const { config, notes } = load({
      env: env({ WATCH_DIRECTORIES: 'incoming, ~/link-to-incoming ,~/Downloads,', ARCHIVE_DIRECTORY: '~' + '/arch' }),
    });
    expect(config.watchRoots.map((r) => r.path)).toEqual([join(cwd, 'incoming'), join(home, 'Downloads')]);
    expect(config.archiveDirectory).toBe(join(home, 'arch'));
    expect(notes).toEqual([
      `WATCH_DIRECTORIES lists ${join(cwd, 'incoming')} more than once (incoming and ~/link-to-incoming); it is watched once`,
    ]);
  });

  it('takes a bare ~ as the home folder', () => {
    const { config } = load({ env: env({ WATCH_DIRECTORIES: '~', ARCHIVE_DIRECTORY: join(root, 'archive') }) });
    expect(config.watchRoots).toEqual([{ path: home, archivePath: join(root, 'archive') }]);
  });

  it('reports a watch folder that does not exist, with both the given and the resolved path', () => {
    expect(problemOf({ env: env({ WATCH_DIRECTORIES: '~/Downloads,~/Nope' }) })).toBe(
      `WATCH_DIRECTORIES: expected existing folders, got "~/Nope" (${join(home, 'Nope')}), which does not exist; fix: create ${join(home, 'Nope')}, or remove it from WATCH_DIRECTORIES`,
    );
  });

  it('takes a missing watch folder on a disk not mounted yet, resolved through its existing parent', async () => {
    const usb = join(root, 'usb');
    await mkdir(usb);
    await symlink(usb, join(home, 'usb'));
    const unmountedDisk = (path: string): AwayDisk | undefined => (path.startsWith(join(home, 'usb')) ? { point: join(home, 'usb'), noted: false } : undefined);
    const { config } = load({ env: env({ WATCH_DIRECTORIES: '~/usb/photos,~/Downloads,~/usb/photos', ARCHIVE_DIRECTORY: join(root, 'archive') }), unmountedDisk });
    expect(config.watchRoots.map((watched) => watched.path)).toEqual([join(usb, 'photos'), join(home, 'Downloads')]);
    // Elsewhere, a missing folder is still a problem.
    expect(problemOf({ env: env({ WATCH_DIRECTORIES: '~/Nope' }), unmountedDisk })).toMatch(/which does not exist/);
  });

  it('reports a missing default watch folder with a fix that does not assume the user set it', async () => {
    const bare = join(root, 'bare-home');
    await mkdir(bare);
    const problems = problemsOf({ homeDir: bare });
    expect(problems).toHaveLength(2);
    expect(problems[0]).toMatch(/Downloads.*fix: create .*, or set WATCH_DIRECTORIES to the folders to watch/);
  });

  it('reports a watch "folder" that is a file', async () => {
    await writeFile(join(home, 'photo.jpg'), 'x');
    expect(problemOf({ env: env({ WATCH_DIRECTORIES: '~/photo.jpg' }) })).toMatch(
      /^WATCH_DIRECTORIES: expected existing folders, got "~\/photo.jpg" \(.*\), which is a file; fix:/,
    );
  });

  it('refuses a watch folder inside another, advising to list only the outer one', async () => {
    await mkdir(join(home, 'Downloads', 'inner'));
    expect(problemOf({ env: env({ WATCH_DIRECTORIES: '~/Downloads/inner,~/Downloads' }) })).toBe(
      `WATCH_DIRECTORIES: expected folders that do not contain each other, got ${join(home, 'Downloads', 'inner')} inside ${join(home, 'Downloads')}, whose files would be seen twice; fix: list only the outer one (${join(home, 'Downloads')})`,
    );
  });

  it('does not mistake a sibling with a common prefix for a nested folder', async () => {
    await mkdir(join(home, 'Downloads2'));
    expect(load({ env: env({ WATCH_DIRECTORIES: '~/Downloads,~/Downloads2' }) }).config.watchRoots).toHaveLength(2);
  });

  it('refuses an archive that is a watch folder', () => {
    expect(problemOf({ env: env({ ARCHIVE_DIRECTORY: '~/Downloads' }) })).toMatch(
      /^ARCHIVE_DIRECTORY: expected a folder that is not a watch folder, got .*Downloads, which is also in WATCH_DIRECTORIES .*; fix: set ARCHIVE_DIRECTORY=/,
    );
  });

  it('refuses a watch folder inside the archive', () => {
    expect(problemOf({ env: env({ ARCHIVE_DIRECTORY: '~/Pictures' }) })).toMatch(
      /^ARCHIVE_DIRECTORY: expected a folder that contains no watch folder, got .*Pictures, which contains the watch folder .*Camera .*loop/,
    );
  });

  it('excludes an archive inside a watch folder from watching, and says so without a warning: a layout of its own', () => {
    const { config, notes, facts } = load({ env: env({ ARCHIVE_DIRECTORY: '~/Downloads/Archived' }) });
    const archive = join(home, 'Downloads', 'Archived');
    expect(config.archiveDirectory).toBe(archive);
    expect(config.excludedPaths).toEqual([archive]);
    expect(notes).toEqual([]);
    expect(facts).toEqual([`ARCHIVE_DIRECTORY ${archive} is inside the watch folder ${join(home, 'Downloads')}: it will not be watched`]);
  });

  it('leaves the archive inside a watch folder out in delete and keep modes too: what it holds is on the server, and delete mode would delete it', () => {
    const archive = join(home, 'Downloads', 'Archived');
    for (const mode of ['delete', 'keep']) {
      const { config, facts } = load({ env: env({ ARCHIVE_DIRECTORY: '~/Downloads/Archived', AFTER_UPLOAD: mode }) });
      expect(config.excludedPaths, mode).toEqual([archive]);
      expect(facts, mode).toEqual([
        `ARCHIVE_DIRECTORY ${archive} is inside the watch folder ${join(home, 'Downloads')}: it is not watched, so what is archived there stays`,
      ]);
    }
    // Not moving there, an archive that is a watch folder, or holds one, is no problem.
    expect(load({ env: env({ ARCHIVE_DIRECTORY: '~/Pictures', AFTER_UPLOAD: 'delete' }) }).config.excludedPaths).toEqual([]);
  });

  it('compares through symlinks: an archive reached via a link into a watch folder is still excluded', async () => {
    await symlink(join(home, 'Downloads'), join(root, 'dl-link'));
    const { config } = load({ env: env({ ARCHIVE_DIRECTORY: join(root, 'dl-link', 'not-yet', 'archive') }) });
    const archive = join(home, 'Downloads', 'not-yet', 'archive');
    expect(config.archiveDirectory).toBe(archive);
    expect(config.excludedPaths).toEqual([archive]);
  });

  it('accepts an archive that does not exist yet, but not one that is (or is under) a file', async () => {
    expect(load({ env: env({ ARCHIVE_DIRECTORY: join(root, 'a', 'b', 'c') }) }).config.archiveDirectory).toBe(join(root, 'a', 'b', 'c'));
    await writeFile(join(root, 'file'), 'x');
    expect(problemOf({ env: env({ ARCHIVE_DIRECTORY: join(root, 'file') }) })).toContain('which is a file');
    expect(problemOf({ env: env({ ARCHIVE_DIRECTORY: join(root, 'file', 'sub') }) })).toContain(
      `which cannot be created because ${join(root, 'file')} is a file`,
    );
  });

  it('refuses an archive or state folder that is, or is under, a symbolic link leading nowhere', async () => {
    await symlink(join(root, 'unplugged', 'photos'), join(root, 'archive-link'));
    const where = `where ${join(root, 'archive-link')} is a symbolic link to ${join(root, 'unplugged', 'photos')}, which does not exist`;
    expect(problemOf({ env: env({ ARCHIVE_DIRECTORY: join(root, 'archive-link') }) })).toContain(where);
    expect(problemOf({ env: env({ ARCHIVE_DIRECTORY: join(root, 'archive-link', 'sub') }) })).toContain(where);
    expect(problemOf({ env: env({ STATE_DIRECTORY: join(root, 'archive-link') }) })).toContain(where);
  });
});

describe('archive layout', () => {
  const sha8 = (path: string): string => createHash('sha1').update(path).digest('hex').slice(0, 8);

  it('uses the archive itself for a single watch folder', () => {
    const { config } = load({ env: env({ WATCH_DIRECTORIES: '~/Downloads' }) });
    expect(config.watchRoots).toEqual([{ path: join(home, 'Downloads'), archivePath: join(home, 'Pictures', 'Archived') }]);
  });

  it('makes shared basenames unique with a hash of the full path, keeping the others plain', async () => {
    const a = join(root, 'phone', 'photos');
    const b = join(root, 'camera', 'Photos');
    await mkdir(a, { recursive: true });
    await mkdir(b, { recursive: true });
    const archive = join(root, 'archive');
    const { config } = load({ env: env({ WATCH_DIRECTORIES: `${a},${b},~/Downloads`, ARCHIVE_DIRECTORY: archive }) });
    expect(config.watchRoots).toEqual([
      { path: a, archivePath: join(archive, `photos-${sha8(a)}`) },
      { path: b, archivePath: join(archive, `Photos-${sha8(b)}`) },
      { path: join(home, 'Downloads'), archivePath: join(archive, 'Downloads') },
    ]);
    // Deterministic: the order of the list does not change where a folder is archived.
    const reordered = load({ env: env({ WATCH_DIRECTORIES: `~/Downloads,${b},${a}`, ARCHIVE_DIRECTORY: archive }) });
    expect(reordered.config.watchRoots.find((r) => r.path === a)?.archivePath).toBe(join(archive, `photos-${sha8(a)}`));
  });
});

describe('.env', () => {
  it('is optional', () => {
    expect(() => load()).not.toThrow();
  });

  it('reports a .env that cannot be read', async () => {
    await mkdir(join(cwd, '.env'));
    expect(problemOf({})).toBe(
      `${join(cwd, '.env')}: expected a readable .env file, got is a folder; fix: make it a readable file of NAME=value lines, or remove it`,
    );
  });

  it('says to set HOME, once, when a folder needs one and the user has none', () => {
    const problems = problemsOf({ homeDir: undefined, env: env({ WATCH_DIRECTORIES: join(home, 'Downloads'), ARCHIVE_DIRECTORY: undefined, STATE_DIRECTORY: undefined }) });
    expect(problems.filter((problem) => problem.startsWith('HOME: '))).toEqual([
      'HOME: expected a home folder for the ~ of a folder option (some default folders are in it), got none: HOME is not set, and this user has no home in /etc/passwd; fix: set HOME, or give WATCH_DIRECTORIES, ARCHIVE_DIRECTORY and STATE_DIRECTORY as absolute paths',
    ]);
    const absolute = env({ WATCH_DIRECTORIES: join(home, 'Downloads'), ARCHIVE_DIRECTORY: join(root, 'archive'), STATE_DIRECTORY: join(root, 'state') });
    expect(load({ homeDir: undefined, env: absolute }).config.stateDirectory).toBe(join(root, 'state'));
  });

  it('reports lines dotenv would silently skip, by number only', async () => {
    await writeFile(join(cwd, '.env'), `# ok\n\nLOG_LEVEL=debug\nIMMICH_API_KEY ${SECRET}\nexport LOG_FORMAT=json\nNOTE="never\nclosed\n`);
    const problems = problemsOf({});
    expect(problems).toEqual([
      `${join(cwd, '.env')}: expected NAME=value lines, got line 4 which is not an assignment; fix: write it as NAME=value, or start it with # to make it a comment`,
      `${join(cwd, '.env')}: expected NAME=value lines, got line 6 whose " quote is never closed; fix: write it as NAME=value, or start it with # to make it a comment`,
    ]);
  });

  it('reports a value dotenv would cut short at a #, and takes one in quotes or a comment after a space', async () => {
    const archive = join(root, 'Photos#1');
    await writeFile(join(cwd, '.env'), `ARCHIVE_DIRECTORY=${archive}\n`);
    expect(problemOf({})).toBe(
      `${join(cwd, '.env')}: expected NAME=value lines, got line 1 whose value has a # in it, where dotenv ends the value; fix: put the value in quotes, as NAME="value#1"`,
    );
    await writeFile(join(cwd, '.env'), `ARCHIVE_DIRECTORY="${archive}"\nLOG_LEVEL=debug # more while it is new\n`);
    const { config } = load({});
    expect([config.archiveDirectory, config.logLevel]).toEqual([archive, 'debug']);
  });

  it('accepts quoted, multi-line, exported and commented values', async () => {
    await writeFile(
      join(cwd, '.env'),
      [
        'export LOG_FORMAT=json',
        'LOG_LEVEL="warn" # inline comment',
        "SUPPORTED_EXTENSIONS='jpg,png'",
        'NOTES="first line',
        'second line"',
        'UPLOAD_CONCURRENCY: 6',
        '',
      ].join('\r\n'),
    );
    const { config } = load();
    expect(config.logFormat).toBe('json');
    expect(config.logLevel).toBe('warn');
    expect([...config.supportedExtensions]).toEqual(['.jpg', '.png']);
    expect(config.uploadConcurrency).toBe(6);
  });
});

describe('all problems at once', () => {
  it('reports every bad value in one ConfigError, one line each', async () => {
    await writeFile(join(cwd, '.env'), 'LOG_FORMAT=xml\n');
    const problems = problemsOf({
      env: {
        IMMICH_API_KEY: SECRET,
        WATCH_DIRECTORIES: '~/Missing,~/Downloads',
        ARCHIVE_DIRECTORY: '~/Downloads',
        WATCH_RECURSIVE: 'perhaps',
        MAX_FILE_SIZE_MB: 'abc',
        UPLOAD_CONCURRENCY: '0',
        LOG_LEVEL: 'chatty',
      },
      flags: { rescanIntervalSeconds: '-3' },
    });
    const names = problems.map((p) => /^[A-Z_]+/.exec(p)?.[0]);
    expect(names).toEqual([
      'IMMICH_API_URL',
      'WATCH_DIRECTORIES',
      'WATCH_RECURSIVE',
      'MAX_FILE_SIZE_MB',
      'LOG_LEVEL',
      'UPLOAD_CONCURRENCY',
      'LOG_FORMAT',
      'RESCAN_INTERVAL_SECONDS',
      // Checked against the usable watch folder although another one failed.
      'ARCHIVE_DIRECTORY',
    ]);
  });
});
