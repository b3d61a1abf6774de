/**
 * Flags + environment + `.env` -> one validated, fully defaulted, frozen {@link Config}.
 *
 * This is the only place user input is interpreted. Every option is declared in `options.ts`
 * (name, flag, default, description); here each value is taken from the first source that has
 * it (flag, then environment, then `.env`, then the declared default), parsed, and checked. All
 * problems are collected and thrown together as one {@link ConfigError}, one line per problem in
 * the form `VARIABLE: expected X, got Y; fix: Z`, so a user fixes everything in one round.
 * The API key is never part of a message.
 */
import { createHash } from 'node:crypto';
import { readFileSync, readlinkSync, realpathSync, statSync, type Stats } from 'node:fs';
import { basename, dirname, join, resolve, sep } from 'node:path';
import dotenv from 'dotenv';
import * as v from 'valibot';
import { MAX_TIMER_SECONDS, OPTIONS, optionSpec, type OptionKey, type OptionOf, type OptionSpec, type ValueKind } from './options.js';
import { closestName } from './support/similar.js';
import { isAtOrInside, isInside } from './support/paths.js';
import type { UnmountedDisk } from './support/mount-table.js';

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
export type LogFormat = 'auto' | 'pretty' | 'json';
/** What happens to an original once the server confirmed it. */
export type AfterUpload = 'move' | 'delete' | 'keep';

/** One watched folder and where its files go in the archive. */
export interface WatchRoot {
  /** Absolute, resolved path of the watched folder. */
  path: string;
  /**
   * Absolute folder inside the archive that mirrors this watch folder: the archive itself when
   * there is one watch folder, `<archive>/<folder name>` when there are several (names made
   * unique when two watch folders share a name; see {@link archiveLayout}).
   */
  archivePath: string;
}

/**
 * The validated, fully defaulted, frozen configuration. Each field names the variable it comes
 * from and its default; `--help`, the README and `.env.example` are generated from the same
 * declarations in `options.ts`.
 *
 * It holds the API key: never log it whole — use {@link redactedConfig}.
 */
export interface Config {
  /**
   * `IMMICH_API_URL` (required): base URL of the API, always ending in `/api`, no trailing slash.
   * `http://host:2283`, `http://host:2283/` and `http://host:2283/api/` all become
   * `http://host:2283/api`.
   */
  apiUrl: string;
  /** `IMMICH_API_KEY`, or the trimmed contents of `IMMICH_API_KEY_FILE` (exactly one is required). Secret. */
  apiKey: string;
  /** `WATCH_DIRECTORIES` (default `~/Downloads,~/Pictures/Camera`): existing folders, realpath'd, deduplicated, none inside another. */
  watchRoots: readonly WatchRoot[];
  /** `ARCHIVE_DIRECTORY` (default `~/Pictures/Archived`): absolute; may not exist yet (created on first use). */
  archiveDirectory: string;
  /** `AFTER_UPLOAD` (default `move`): move into the archive, delete, or keep the original. */
  afterUpload: AfterUpload;
  /**
   * `REMOVE_EMPTY_FOLDERS` (default `false`): remove a sub-folder the uploader emptied (move and
   * delete modes; always false with keep).
   */
  removeEmptyFolders: boolean;
  /**
   * `STATE_DIRECTORY` (default `$XDG_STATE_HOME/immich-auto-uploader`, else
   * `~/.local/state/immich-auto-uploader`): where the journal lives; created with mode 0700.
   */
  stateDirectory: string;
  /** `WATCH_RECURSIVE` (default `true`): also watch sub-folders. */
  watchRecursive: boolean;
  /** `SUPPORTED_EXTENSIONS` (default: common photo and video types). Lower-case, with a leading dot: `.jpg`. */
  supportedExtensions: ReadonlySet<string>;
  /** `MAX_FILE_SIZE_MB` (default `1000`) x 1024 x 1024. Files larger than this are skipped. */
  maxFileSizeBytes: number;
  /** `FILE_STABILITY_WAIT_SECONDS` (default `5`) in ms: how long a file must stay unchanged. */
  fileStabilityWaitMs: number;
  /** `FILE_STABILITY_CHECK_INTERVAL` (default `1.0` s) in ms, at least 50. */
  fileStabilityCheckIntervalMs: number;
  /** `RESCAN_INTERVAL_SECONDS` (default `300`) in ms: full rescans that catch missed events. */
  rescanIntervalMs: number;
  /** `WATCH_POLLING` (default `false`): no file events, only rescans every {@link watchPollIntervalMs}. */
  watchPolling: boolean;
  /** `WATCH_POLL_INTERVAL_SECONDS` (default `10`) in ms. */
  watchPollIntervalMs: number;
  /** `UPLOAD_CONCURRENCY` (default `4`): integer 1..32. */
  uploadConcurrency: number;
  /** `SHUTDOWN_GRACE_SECONDS` (default `30`) in ms: time in-flight uploads get after SIGINT/SIGTERM. */
  shutdownGraceMs: number;
  /** `LOG_LEVEL` (default `INFO`, any case; `warning` means `warn`). */
  logLevel: LogLevel;
  /** `LOG_FORMAT` (default `auto`: pretty on a terminal, JSON otherwise). */
  logFormat: LogFormat;
  /** Folders never scanned or watched (the archive when it lies inside a watch folder). */
  excludedPaths: readonly string[];
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  /** `notes`: what else was noticed, such as a mistyped variable that may be the cause. */
  constructor(
    readonly problems: string[],
    readonly notes: string[] = [],
  ) {
    super(problems.join('\n'));
  }
}

export interface LoadConfigInput {
  /** `command.opts()`: keyed by the option keys of `options.ts`; unknown keys are ignored. */
  flags: Record<string, unknown>;
  /** Usually `process.env`; only read, never written. */
  env: Record<string, string | undefined>;
  /** Relative paths (and the default `.env`) are resolved against this folder. */
  cwd: string;
  /** What `~` means; undefined where the user has none (no HOME, no entry in /etc/passwd). */
  homeDir: string | undefined;
  /** Default `<cwd>/.env`. A missing file is fine; an unreadable or malformed one is a problem. */
  envFile?: string;
  /**
   * Where /etc/fstab mounts a disk that is not mounted yet: a watch folder on it may be missing
   * (the run says so, and waits for it or stops). By default, no folder is.
   */
  unmountedDisk?: UnmountedDisk;
}

export interface LoadedConfig {
  config: Config;
  /**
   * Things the user should hear about at start-up that are not errors (a folder is listed twice,
   * the key was passed as a flag, a variable looks mistyped); one line each, said as warnings.
   */
  notes: string[];
  /** What the configuration means, worth a line at start but no warning (the archive inside a watch folder is left out of watching). */
  facts: string[];
}

type Source =
  | { readonly kind: 'flag' }
  | { readonly kind: 'env' }
  | { readonly kind: 'dotenv'; readonly file: string }
  | { readonly kind: 'default' };

/** A value as the user wrote it (trimmed), and where it came from, for the messages. */
interface Raw {
  readonly text: string;
  readonly source: Source;
}

interface Ctx {
  readonly flags: Record<string, unknown>;
  readonly env: Record<string, string | undefined>;
  readonly dotenv: Readonly<Record<string, string>>;
  readonly envFile: string;
  readonly cwd: string;
  readonly homeDir: string | undefined;
  readonly unmountedDisk: UnmountedDisk;
  readonly problems: string[];
  readonly notes: string[];
  readonly facts: string[];
  /** Every API key value seen, used or not, to be blanked out of all messages. */
  readonly secrets: Set<string>;
}

/** Shorter values are not scrubbed: blanking every "a" in every message would help nobody. */
const MIN_SCRUBBED_LENGTH = 8;

type Layer = 'flag' | 'env' | 'dotenv';
const LAYERS: readonly Layer[] = ['flag', 'env', 'dotenv'];

/**
 * Loads and validates the configuration; throws {@link ConfigError} listing every problem.
 * An empty value counts as not set at that level (so `FOO=` in `.env` means "use the default").
 */
export function loadConfig(input: LoadConfigInput): LoadedConfig {
  const ctx = contextOf(input);
  const { problems, notes } = ctx;
  noteMistypedNames(ctx);

  const apiUrl = readUrl(ctx);
  const apiKey = readApiKey(ctx);
  const watchFolders = readWatchFolders(ctx);
  const afterUpload: AfterUpload = readEnum(ctx, 'afterUpload');
  const archive = readCreatableFolder(ctx, 'archiveDirectory');
  const removeEmptyFolders = readBoolean(ctx, 'removeEmptyFolders');
  if (removeEmptyFolders && afterUpload === 'keep') {
    ctx.notes.push(`${optionSpec('removeEmptyFolders').env} has no effect with AFTER_UPLOAD=keep: files stay, and so do their folders`);
  }
  const stateDirectory = readCreatableFolder(ctx, 'stateDirectory', xdgStateDefault(ctx));
  const watchRecursive = readBoolean(ctx, 'watchRecursive');
  const supportedExtensions = readExtensions(ctx);
  const maxFileSizeMb = readNumber(ctx, 'maxFileSizeMb');
  const stabilityWait = readNumber(ctx, 'fileStabilityWaitSeconds');
  const stabilityInterval = readNumber(ctx, 'fileStabilityCheckInterval');
  const logLevel: LogLevel = readEnum(ctx, 'logLevel');
  const uploadConcurrency = readInteger(ctx, 'uploadConcurrency');
  const logFormat: LogFormat = readEnum(ctx, 'logFormat');
  const rescanInterval = readNumber(ctx, 'rescanIntervalSeconds');
  const watchPolling = readBoolean(ctx, 'watchPolling');
  const pollInterval = readNumber(ctx, 'watchPollIntervalSeconds');
  const shutdownGrace = readNumber(ctx, 'shutdownGraceSeconds');

  // Checked against the usable watch folders even when others failed, so that every problem
  // shows up in one round.
  // The archive is never taken for incoming files, whatever the mode: in delete mode every file in
  // it is on the server, and would be deleted.
  const excludedPaths = archive !== undefined ? checkArchiveAgainstWatch(ctx, watchFolders.folders, archive, afterUpload === 'move') : [];
  // The journal lives outside what is watched, whatever the user chose.
  if (stateDirectory !== undefined) {
    checkStateAgainstFolders(ctx, stateDirectory, watchFolders.folders, afterUpload === 'move' ? archive : undefined);
    if (watchFolders.folders.some((folder) => isInside(stateDirectory, folder))) excludedPaths.push(stateDirectory);
  }

  // Belt and braces: no message prints the key on purpose, but a user who swaps two values
  // (the key in IMMICH_API_URL, say) would see it echoed back as "got ...". Any key value given
  // at any level is therefore blanked out of every problem and note.
  const secrets = [...ctx.secrets].filter((secret) => secret.length >= MIN_SCRUBBED_LENGTH);
  const scrub = (text: string): string =>
    secrets.reduce((out, secret) => out.replaceAll(secret, '(hidden)'), text).replace(KEY_SETTING, '$1(hidden)');
  for (const lines of [notes, ctx.facts]) lines.splice(0, lines.length, ...lines.map(scrub));
  if (problems.length > 0 || !watchFolders.ok || archive === undefined || stateDirectory === undefined) {
    throw new ConfigError(problems.map(scrub), notes);
  }

  const config: Config = {
    apiUrl,
    apiKey,
    watchRoots: Object.freeze(archiveLayout(watchFolders.folders, archive).map((root) => Object.freeze(root))),
    archiveDirectory: archive,
    afterUpload,
    removeEmptyFolders: removeEmptyFolders && afterUpload !== 'keep',
    stateDirectory,
    watchRecursive,
    supportedExtensions: freezeSet(supportedExtensions),
    maxFileSizeBytes: Math.round(maxFileSizeMb * 1024 * 1024),
    fileStabilityWaitMs: secondsToMs(stabilityWait),
    fileStabilityCheckIntervalMs: secondsToMs(stabilityInterval),
    rescanIntervalMs: secondsToMs(rescanInterval),
    watchPolling,
    watchPollIntervalMs: secondsToMs(pollInterval),
    uploadConcurrency,
    shutdownGraceMs: secondsToMs(shutdownGrace),
    logLevel,
    logFormat,
    excludedPaths: Object.freeze(excludedPaths),
  };
  return { config: Object.freeze(config), notes, facts: ctx.facts };
}

/**
 * Only STATE_DIRECTORY, with the same precedence and checks: enough for the commands that read
 * the journal (`status`, `history`, `retry`), which need no server and no folders.
 */
export function loadStateDirectory(input: LoadConfigInput): string {
  const ctx = contextOf(input);
  const directory = readCreatableFolder(ctx, 'stateDirectory', xdgStateDefault(ctx));
  if (ctx.problems.length > 0 || directory === undefined) throw new ConfigError(ctx.problems);
  return directory;
}

function contextOf(input: LoadConfigInput): Ctx {
  const envFile = resolve(input.cwd, input.envFile ?? '.env');
  const problems: string[] = [];
  return {
    flags: input.flags,
    env: input.env,
    dotenv: readDotenv(envFile, problems),
    envFile,
    cwd: input.cwd,
    homeDir: input.homeDir,
    unmountedDisk: input.unmountedDisk ?? (() => undefined),
    problems,
    notes: [],
    facts: [],
    secrets: new Set(),
  };
}

/** The config as a plain object that is safe to log or print: the API key is `(hidden)`. */
export function redactedConfig(config: Config): Record<string, unknown> {
  return { ...config, apiKey: '(hidden)', supportedExtensions: [...config.supportedExtensions] };
}

/**
 * Where each watch folder's files go inside the archive.
 *
 * - One watch folder: the archive itself.
 * - Several: `<archive>/<basename of the watch folder>`.
 * - When two or more watch folders share a basename (compared case-insensitively, because the
 *   default file systems of macOS and Windows are), each of them gets
 *   `<basename>-<first 8 hex digits of sha1(full resolved path)>` instead. This is deterministic:
 *   the same folders always map to the same archive folders, across restarts and regardless of
 *   the order in which they are listed.
 * - The file-system root (basename `''`) is called `root`.
 */
export function archiveLayout(watchFolders: readonly string[], archive: string): WatchRoot[] {
  if (watchFolders.length === 1) return watchFolders.map((path) => ({ path, archivePath: archive }));
  const nameOf = (path: string): string => basename(path) || 'root';
  const counts = new Map<string, number>();
  for (const path of watchFolders) {
    const key = nameOf(path).toLowerCase();
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return watchFolders.map((path) => {
    const name = nameOf(path);
    const unique =
      (counts.get(name.toLowerCase()) ?? 0) > 1
        ? `${name}-${createHash('sha1').update(path).digest('hex').slice(0, 8)}`
        : name;
    return { path, archivePath: join(archive, unique) };
  });
}

// ---------------------------------------------------------------------------------------------
// Sources and messages

/** Reads `.env` with dotenv.parse (never into process.env). Missing is fine. */
function readDotenv(file: string, problems: string[]): Record<string, string> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    const code = errorCode(error);
    if (code === 'ENOENT') return {};
    problems.push(
      `${file}: expected a readable .env file, got ${describeFsError(code)}; fix: make it a readable file of NAME=value lines, or remove it`,
    );
    return {};
  }
  // dotenv.parse skips lines it does not understand without a word; a typo such as a missing
  // "=" would then silently fall back to a default. Report such lines by number only: a line
  // of a .env may well hold the API key, so its text is never echoed.
  for (const { line, reason, fix } of malformedDotenvLines(text)) {
    problems.push(
      `${file}: expected NAME=value lines, got line ${line} ${reason}; fix: ${fix ?? 'write it as NAME=value, or start it with # to make it a comment'}`,
    );
  }
  return dotenv.parse(text);
}

/**
 * Lines dotenv would ignore (not blank, not a comment, not `NAME=value` or `NAME: value`), and
 * those it would cut short: an unquoted value ends at its first `#`, so `Photos#1` would be
 * `Photos`, a folder of another name.
 */
function malformedDotenvLines(text: string): { line: number; reason: string; fix?: string }[] {
  const bad: { line: number; reason: string; fix?: string }[] = [];
  const lines = text.replace(/\r\n?/g, '\n').split('\n');
  let open: { quote: string; line: number } | undefined;
  lines.forEach((raw, index) => {
    if (open !== undefined) {
      // Inside a quoted value that spans lines: dotenv allows that, so wait for the closing quote.
      if (raw.includes(open.quote)) open = undefined;
      return;
    }
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const match = /^(?:export\s+)?[\w.-]+(?:\s*=|:\s)(.*)$/.exec(line);
    if (match === null) {
      bad.push({ line: index + 1, reason: 'which is not an assignment' });
      return;
    }
    const value = (match[1] ?? '').trimStart();
    const quote = value[0];
    if ((quote === '"' || quote === "'" || quote === '`') && !value.slice(1).includes(quote)) {
      open = { quote, line: index + 1 };
    } else if (quote !== '"' && quote !== "'" && quote !== '`' && /[^\s#]#/.test(value)) {
      bad.push({ line: index + 1, reason: 'whose value has a # in it, where dotenv ends the value', fix: 'put the value in quotes, as NAME="value#1"' });
    }
  });
  if (open !== undefined) bad.push({ line: open.line, reason: `whose ${open.quote} quote is never closed` });
  return bad;
}

function nonEmpty(value: string | undefined): string | undefined {
  const trimmed = value?.trim();
  return trimmed === undefined || trimmed === '' ? undefined : trimmed;
}

/** The value of `spec` at one layer, or undefined when that layer does not set it. */
function layerText(ctx: Ctx, spec: OptionSpec, layer: Layer): string | undefined {
  switch (layer) {
    case 'flag': {
      const value = ctx.flags[spec.key];
      if (typeof value === 'string') return nonEmpty(value);
      // A bare boolean flag (`--watch-polling`) arrives as `true`.
      if (typeof value === 'boolean' || typeof value === 'number') return String(value);
      return undefined;
    }
    case 'env':
      return nonEmpty(unquoted(ctx, spec, ctx.env[spec.env]));
    case 'dotenv':
      return nonEmpty(ctx.dotenv[spec.env]);
  }
}

/** A value in matching quotes, as the environment keeps them: `"http://nas:2283"`. */
const IN_QUOTES = /^(["']).*\1$/s;

/**
 * A value in matching quotes from the environment, without them. Docker Compose's list form
 * (`- IMMICH_API_URL="http://nas:2283"`) and systemd keep such quotes as part of the value, where
 * .env files and shells take them off: none of the options means them.
 */
function unquoted(ctx: Ctx, spec: OptionSpec, value: string | undefined): string | undefined {
  const quoted = value !== undefined && value.length >= 2 && IN_QUOTES.test(value);
  if (!quoted) return value;
  const note = `${spec.env} was given in quotes, which were taken off (in Docker Compose's list form, write - ${spec.env}=<value> without them)`;
  if (!ctx.notes.includes(note)) ctx.notes.push(note);
  return value.slice(1, -1);
}

function sourceOf(ctx: Ctx, layer: Layer): Source {
  switch (layer) {
    case 'flag':
      return { kind: 'flag' };
    case 'env':
      return { kind: 'env' };
    case 'dotenv':
      return { kind: 'dotenv', file: ctx.envFile };
  }
}

/** The highest-precedence value the user gave, or undefined. */
function pick(ctx: Ctx, spec: OptionSpec): Raw | undefined {
  for (const layer of LAYERS) {
    const text = layerText(ctx, spec, layer);
    if (text !== undefined) return { text, source: sourceOf(ctx, layer) };
  }
  return undefined;
}

function pickOrDefault(ctx: Ctx, spec: OptionSpec & { default: string }): Raw {
  return pick(ctx, spec) ?? { text: spec.default, source: { kind: 'default' } };
}

/** `VARIABLE`, plus where the value came from when that was not the environment. */
function label(spec: OptionSpec, source: Source): string {
  switch (source.kind) {
    case 'flag':
      return `${spec.env} (from ${spec.flag})`;
    case 'dotenv':
      return `${spec.env} (from ${source.file})`;
    case 'env':
    case 'default':
      return spec.env;
  }
}

/** How to give `value` in the place the bad value came from. */
function setHint(spec: OptionSpec, source: Source, value: string): string {
  switch (source.kind) {
    case 'flag':
      return `pass ${spec.flag} ${value}`;
    case 'dotenv':
      return `set ${spec.env}=${value} in ${source.file}`;
    case 'env':
    case 'default':
      return `set ${spec.env}=${value}`;
  }
}

function report(ctx: Ctx, spec: OptionSpec, source: Source, expected: string, got: string, fix: string): void {
  // `IMMICH_API_URL=http://nas:2283 IMMICH_API_KEY=...` on one line of .env.
  const twoInOne = /\s[A-Z][A-Z0-9_]{2,}=/.test(got) ? ' (this value holds another setting: give each its own line)' : '';
  ctx.problems.push(`${label(spec, source)}: expected ${expected}, got ${got}; fix: ${fix}${twoInOne}`);
}

/** A key given inside another value (two settings on one line): its value is hidden like any key's. */
const KEY_SETTING = /(IMMICH_API_KEY=)(?![<(])("[^"]*"|'[^']*'|[^\s"',;)]+)/g;

// ---------------------------------------------------------------------------------------------
// Scalars

// Finite too: 400 digits make Infinity.
const DECIMAL = v.pipe(v.string(), v.regex(/^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$/), v.transform(Number), v.finite());
const WHOLE = v.pipe(v.string(), v.regex(/^[+-]?\d+$/), v.transform(Number), v.finite());

function secondsToMs(seconds: number): number {
  return Math.round(seconds * 1000);
}

type NumberKey = { [K in OptionKey]: OptionOf<K>['kind']['type'] extends 'number' ? K : never }[OptionKey];

function readNumber(ctx: Ctx, key: NumberKey): number {
  const spec = optionSpec(key);
  // Widened on purpose: the literal types of the declarations would make some branches "never".
  const kind: Extract<ValueKind, { type: 'number' }> = spec.kind;
  const fallback = Number(spec.default);
  const raw = pickOrDefault(ctx, spec);
  const noun = kind.unit === 'megabytes' ? 'number of megabytes' : 'number of seconds';
  const expected =
    kind.minInclusive === true
      ? kind.min === 0
        ? `a ${noun}, 0 or more`
        : `a ${noun}, at least ${kind.min}`
      : kind.min === 0
        ? `a positive ${noun}`
        : `a ${noun} above ${kind.min}`;
  const bounded = v.pipe(DECIMAL, kind.minInclusive === true ? v.minValue(kind.min) : v.gtValue(kind.min));
  const fix = `${setHint(spec, raw.source, spec.default)} or another number`;
  const parsed = v.safeParse(bounded, raw.text);
  if (!parsed.success) {
    report(ctx, spec, raw.source, expected, JSON.stringify(raw.text), fix);
    return fallback;
  }
  if (kind.unit === 'seconds' && parsed.output > MAX_TIMER_SECONDS) {
    report(
      ctx,
      spec,
      raw.source,
      `at most ${MAX_TIMER_SECONDS} seconds (about 24 days; longer timers overflow)`,
      JSON.stringify(raw.text),
      fix,
    );
    return fallback;
  }
  return parsed.output;
}

function readInteger(ctx: Ctx, key: 'uploadConcurrency'): number {
  const spec = optionSpec(key);
  const { min, max } = spec.kind;
  const raw = pickOrDefault(ctx, spec);
  const parsed = v.safeParse(v.pipe(WHOLE, v.integer(), v.minValue(min), v.maxValue(max)), raw.text);
  if (parsed.success) return parsed.output;
  report(
    ctx,
    spec,
    raw.source,
    `a whole number from ${min} to ${max}`,
    JSON.stringify(raw.text),
    `${setHint(spec, raw.source, spec.default)} or another whole number from ${min} to ${max}`,
  );
  return Number(spec.default);
}

const TRUTHY = ['true', '1', 'yes', 'on'];
const BOOLEAN = v.pipe(
  v.string(),
  v.toLowerCase(),
  v.picklist([...TRUTHY, 'false', '0', 'no', 'off']),
  v.transform((text) => TRUTHY.includes(text)),
);

function readBoolean(ctx: Ctx, key: 'watchRecursive' | 'watchPolling' | 'removeEmptyFolders'): boolean {
  const spec = optionSpec(key);
  const raw = pickOrDefault(ctx, spec);
  const parsed = v.safeParse(BOOLEAN, raw.text);
  if (parsed.success) return parsed.output;
  report(
    ctx,
    spec,
    raw.source,
    'true or false (or 1/0, yes/no, on/off)',
    JSON.stringify(raw.text),
    `${setHint(spec, raw.source, 'true')} or ${setHint(spec, raw.source, 'false')}`,
  );
  return v.parse(BOOLEAN, spec.default);
}

type EnumKey = 'logLevel' | 'logFormat' | 'afterUpload';
type EnumValue<K extends EnumKey> = OptionOf<K>['kind']['values'][number];

function readEnum<K extends EnumKey>(ctx: Ctx, key: K): EnumValue<K> {
  const spec: OptionSpec = optionSpec(key);
  if (spec.kind.type !== 'enum' || spec.default === undefined) throw new Error(`${key} is not an enum option`);
  const { values, aliases = {} } = spec.kind;
  const schema = v.pipe(
    v.string(),
    v.toLowerCase(),
    v.transform((text) => aliases[text] ?? text),
    v.picklist(values),
  );
  const raw = pickOrDefault(ctx, { ...spec, default: spec.default });
  const parsed = v.safeParse(schema, raw.text);
  if (parsed.success) return parsed.output as EnumValue<K>;
  report(
    ctx,
    spec,
    raw.source,
    `one of ${values.join(', ')} (any case)`,
    JSON.stringify(raw.text),
    setHint(spec, raw.source, spec.default),
  );
  return v.parse(schema, spec.default) as EnumValue<K>;
}

function readExtensions(ctx: Ctx): Set<string> {
  const spec = optionSpec('supportedExtensions');
  const raw = pickOrDefault(ctx, spec);
  const listed = raw.text
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '');
  // A sidecar uploaded on its own would be an asset of its own, or refused by Immich.
  const entries = listed.filter((entry) => entry.replace(/^\./, '').toLowerCase() !== 'xmp');
  if (entries.length < listed.length) {
    ctx.notes.push(`${spec.env} lists xmp, which is ignored: an XMP sidecar goes to the server with its photo, never on its own`);
  }
  // One dot at most, at the start: the pipeline compares against path.extname, which only ever
  // returns the last extension, so "tar.gz" could never match anything.
  // A wildcard (`*`, `*.jpg`) matches nothing: each extension is listed.
  const invalid = entries.filter((entry) => !/^\.?[^.\s/\\*?]+$/.test(entry));
  if (entries.length === 0 || invalid.length > 0) {
    const why =
      entries.length === 0
        ? 'no extensions'
        : `${invalid.map((e) => JSON.stringify(e)).join(', ')} ${invalid.length === 1 ? 'is not an extension' : 'are not extensions'}`;
    report(
      ctx,
      spec,
      raw.source,
      'comma-separated file extensions such as jpg,mp4',
      `${JSON.stringify(raw.text)} (${why})`,
      `${setHint(spec, raw.source, 'jpg,jpeg,png,heic,mp4,mov')}, or leave it unset for the default list`,
    );
  }
  return new Set(entries.filter((e) => !invalid.includes(e)).map((e) => `.${e.replace(/^\./, '').toLowerCase()}`));
}

/**
 * `http(s)://host[:port][/prefix]` with or without a trailing `/api` and slashes becomes
 * `<origin><prefix>/api`: the one form the client appends endpoint paths to.
 */
function readUrl(ctx: Ctx): string {
  const spec = optionSpec('apiUrl');
  const raw = pick(ctx, spec);
  const example = spec.example;
  if (raw === undefined) {
    ctx.problems.push(
      `${spec.env}: expected the URL of your Immich server, got nothing; fix: set ${spec.env}=${example} (in the environment or .env) or pass ${spec.flag} ${example}`,
    );
    return '';
  }
  const bad = (why: string, suggestion: string = example): string => {
    report(
      ctx,
      spec,
      raw.source,
      'an http:// or https:// URL of the Immich server',
      why,
      setHint(spec, raw.source, suggestion),
    );
    return '';
  };
  const hasScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(raw.text);
  let url: URL;
  try {
    url = new URL(raw.text);
  } catch {
    return bad(`${JSON.stringify(raw.text)} (not a URL)`, hasScheme ? example : `http://${raw.text}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    return bad(
      `${JSON.stringify(raw.text)} (${hasScheme ? `scheme ${url.protocol.slice(0, -1)}` : 'no http:// or https://'})`,
      hasScheme ? example : `http://${raw.text}`,
    );
  }
  if (url.username !== '' || url.password !== '') {
    // Never echo the credentials: show the URL without them.
    return bad(`a URL with a user name or password (${url.protocol}//***@${url.host}${url.pathname})`, `${url.origin}${url.pathname}`);
  }
  if (url.search !== '' || url.hash !== '') {
    return bad(`${JSON.stringify(raw.text)} (has a ?query or #fragment)`, `${url.origin}${url.pathname}`);
  }
  const prefix = url.pathname.replace(/\/+$/, '').replace(/\/api$/i, '');
  return `${url.origin}${prefix}/api`;
}

/**
 * The key comes from IMMICH_API_KEY or from the file named by IMMICH_API_KEY_FILE. The two are
 * one setting: the highest-precedence level that sets either decides (so `--api-key-file`
 * overrides an IMMICH_API_KEY in `.env`), and one level setting both is refused rather than
 * silently preferring one, since that is almost always a leftover.
 */
function readApiKey(ctx: Ctx): string {
  const keySpec = optionSpec('apiKey');
  const fileSpec = optionSpec('apiKeyFile');
  for (const layer of LAYERS) {
    const key = layerText(ctx, keySpec, layer);
    if (key !== undefined) ctx.secrets.add(key);
  }
  for (const layer of LAYERS) {
    const key = layerText(ctx, keySpec, layer);
    const file = layerText(ctx, fileSpec, layer);
    const source = sourceOf(ctx, layer);
    if (key !== undefined && file !== undefined) {
      const where = source.kind === 'flag' ? ` (from ${keySpec.flag} and ${fileSpec.flag})` : source.kind === 'dotenv' ? ` (from ${source.file})` : '';
      ctx.problems.push(
        `${keySpec.env} and ${fileSpec.env}${where}: expected only one of them, got both; fix: remove one of them (${fileSpec.env} keeps the key out of the environment)`,
      );
      return '';
    }
    if (key !== undefined) {
      if (source.kind === 'flag') {
        ctx.notes.push(
          `${keySpec.env} was given with ${keySpec.flag}, which other users of this machine can see in the process list; ${fileSpec.env} or the environment keep it private`,
        );
      }
      return checkKey(ctx, keySpec, source, key, 'the key');
    }
    if (file !== undefined) return readKeyFile(ctx, fileSpec, source, file);
  }
  ctx.problems.push(
    `${keySpec.env}: expected an Immich API key (or ${fileSpec.env} naming a file that holds one), got nothing; fix: create a key in Immich under Account Settings > API Keys, then set ${keySpec.env}=<the key> or ${fileSpec.env}=${fileSpec.example}`,
  );
  return '';
}

function checkKey(ctx: Ctx, spec: OptionSpec, source: Source, key: string, what: string): string {
  // A line of .env copied into the key's file, or the key in quotes: the server would refuse it.
  const extra = /^IMMICH_API_KEY\s*=/.test(key) ? "the variable's name before it" : IN_QUOTES.test(key) ? 'quotes around it' : undefined;
  if (extra !== undefined) {
    report(ctx, spec, source, 'the API key alone', `${what} (hidden), with ${extra}`, 'leave only the key itself there');
    return '';
  }
  // The key goes into an HTTP header: spaces, control and non-ASCII characters would make every
  // request fail with a confusing error, so catch a pasted-in mistake here.
  if (/^[\x21-\x7e]+$/.test(key)) return key;
  report(
    ctx,
    spec,
    source,
    'an API key of printable ASCII characters without spaces',
    `${what} (hidden), which contains other characters`,
    'copy the key again from Immich (Account Settings > API Keys)',
  );
  return '';
}

function readKeyFile(ctx: Ctx, spec: OptionSpec, source: Source, text: string): string {
  const path = expandPath(ctx, text);
  const given = text === path ? JSON.stringify(text) : `${JSON.stringify(text)} (${path})`;
  let contents: string;
  try {
    contents = readFileSync(path, 'utf8');
  } catch (error) {
    // Putting the key itself into IMMICH_API_KEY_FILE is an easy slip; a value with no path-like
    // character in it is therefore not echoed.
    const shownAs = /[/\\.~]/.test(text) ? given : 'a value that is not a path (not shown, in case it is the key itself)';
    report(
      ctx,
      spec,
      source,
      'a readable file holding the API key',
      `${shownAs}, which ${describeFsError(errorCode(error))}`,
      `${setHint(spec, source, '<path of a file holding only the key>')}, or check the file's permissions`,
    );
    return '';
  }
  const key = contents.trim();
  if (key !== '') ctx.secrets.add(key);
  if (key === '') {
    report(ctx, spec, source, 'a file holding the API key', `${given}, which is empty`, `write the API key into ${path}`);
    return '';
  }
  return checkKey(ctx, spec, source, key, `the contents of ${path}`);
}

// ---------------------------------------------------------------------------------------------
// Folders

/** `~` and `~/...` are the home folder; anything else is resolved against the working folder. */
function expandPath(ctx: Ctx, text: string): string {
  if (text !== '~' && !text.startsWith('~/') && !text.startsWith(`~${sep}`)) return resolve(ctx.cwd, text);
  if (ctx.homeDir === undefined) {
    const problem =
      'HOME: expected a home folder for the ~ of a folder option (some default folders are in it), got none: ' +
      'HOME is not set, and this user has no home in /etc/passwd; fix: set HOME, or give WATCH_DIRECTORIES, ARCHIVE_DIRECTORY and STATE_DIRECTORY as absolute paths';
    if (!ctx.problems.includes(problem)) ctx.problems.push(problem);
    return resolve(ctx.cwd, text);
  }
  return resolve(ctx.homeDir, text.slice(2));
}

function errorCode(error: unknown): string {
  if (typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string') {
    return error.code;
  }
  return 'an unknown error';
}

function describeFsError(code: string): string {
  switch (code) {
    case 'ENOENT':
      return 'does not exist';
    case 'ENOTDIR':
      return 'has a file where a folder should be in its path';
    case 'EISDIR':
      return 'is a folder';
    case 'EACCES':
    case 'EPERM':
      return `cannot be read (permission denied, ${code})`;
    default:
      return `cannot be read (${code})`;
  }
}

/** The usable watch folders, resolved and deduplicated; `ok` is false when any was refused. */
function readWatchFolders(ctx: Ctx): { folders: string[]; ok: boolean } {
  const spec = optionSpec('watchDirectories');
  const raw = pickOrDefault(ctx, spec);
  const entries = raw.text
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '');
  const elsewhere =
    raw.source.kind === 'default'
      ? `set ${spec.env} to the folders to watch, comma-separated`
      : `remove it from ${raw.source.kind === 'flag' ? spec.flag : spec.env}`;
  if (entries.length === 0) {
    report(ctx, spec, raw.source, 'at least one folder', JSON.stringify(raw.text), setHint(spec, raw.source, spec.default));
    return { folders: [], ok: false };
  }
  const folders: string[] = [];
  const givenAs = new Map<string, string>();
  let ok = true;
  for (const entry of entries) {
    const path = expandPath(ctx, entry);
    const given = entry === path ? JSON.stringify(entry) : `${JSON.stringify(entry)} (${path})`;
    let stats: Stats | undefined;
    try {
      stats = statSync(path);
    } catch (error) {
      const code = errorCode(error);
      // A folder on a disk not mounted yet is looked for once the disk is there.
      if (code !== 'ENOENT' || ctx.unmountedDisk(path) === undefined) {
        const fix = code === 'ENOENT' ? `create ${path}, or ${elsewhere}` : `check the permissions of ${path}, or ${elsewhere}`;
        report(ctx, spec, raw.source, 'existing folders', `${given}, which ${describeFsError(code)}`, fix);
        ok = false;
        continue;
      }
    }
    if (stats?.isDirectory() === false) {
      report(ctx, spec, raw.source, 'existing folders', `${given}, which is a file`, `list the folder that holds it, or ${elsewhere}`);
      ok = false;
      continue;
    }
    // realpath, so that a symlink and its target (or /tmp and /private/tmp) count as one folder.
    const real = realpathOfNearest(path);
    if (dirname(real) === real) {
      // Every photo of the machine (and of every disk mounted on it) would be moved or deleted.
      report(ctx, spec, raw.source, 'folders of photos to upload', `${given}, the whole file system`, `name the folders to empty into Immich, or ${elsewhere}`);
      ok = false;
      continue;
    }
    if (givenAs.has(real)) {
      ctx.notes.push(`${spec.env} lists ${real} more than once (${givenAs.get(real)} and ${entry}); it is watched once`);
      continue;
    }
    givenAs.set(real, entry);
    folders.push(real);
  }
  for (const inner of folders) {
    const outer = folders.find((other) => isInside(inner, other));
    if (outer !== undefined) {
      report(
        ctx,
        spec,
        raw.source,
        'folders that do not contain each other',
        `${inner} inside ${outer}, whose files would be seen twice`,
        `list only the outer one (${outer})`,
      );
      ok = false;
    }
  }
  return { folders, ok };
}

/**
 * The archive folder, resolved. It need not exist (it is created on first use), so the nearest
 * existing ancestor is realpath'd and the rest appended, which keeps comparisons with the
 * (realpath'd) watch folders right when the path goes through a symlink.
 */
function readCreatableFolder(
  ctx: Ctx,
  key: 'archiveDirectory' | 'stateDirectory',
  fallback?: Raw,
): string | undefined {
  const spec = optionSpec(key);
  const raw = pick(ctx, spec) ?? fallback ?? pickOrDefault(ctx, spec);
  const path = expandPath(ctx, raw.text);
  const given = raw.text === path ? JSON.stringify(raw.text) : `${JSON.stringify(raw.text)} (${path})`;
  const fix = `${setHint(spec, raw.source, '<a folder>')}; it is created on first use`;
  const missing: string[] = [];
  let existing = path;
  for (;;) {
    let stats: Stats | undefined;
    try {
      stats = statSync(existing);
    } catch (error) {
      const code = errorCode(error);
      if (code !== 'ENOENT' && code !== 'ENOTDIR') {
        report(ctx, spec, raw.source, 'a folder', `${given}, where ${existing} ${describeFsError(code)}`, fix);
        return undefined;
      }
      const target = danglingLinkTarget(existing);
      if (target !== undefined) {
        report(ctx, spec, raw.source, 'a folder', `${given}, where ${existing} is a symbolic link to ${target}, which does not exist`, fix);
        return undefined;
      }
    }
    if (stats !== undefined) {
      if (!stats.isDirectory()) {
        const why = existing === path ? 'which is a file' : `which cannot be created because ${existing} is a file`;
        report(ctx, spec, raw.source, 'a folder (or a path where one can be created)', `${given}, ${why}`, fix);
        return undefined;
      }
      return join(realpathSync(existing), ...missing.reverse());
    }
    const parent = dirname(existing);
    if (parent === existing) return path;
    missing.push(basename(existing));
    existing = parent;
  }
}

/** Where `path` is a symbolic link that leads nowhere (stat found nothing), what it points to. */
function danglingLinkTarget(path: string): string | undefined {
  try {
    return readlinkSync(path);
  } catch {
    return undefined;
  }
}

/** `path` realpath'd; where it does not exist, its nearest existing ancestor, with the rest appended. */
function realpathOfNearest(path: string): string {
  const parent = dirname(path);
  if (parent === path) return path;
  try {
    return realpathSync(path);
  } catch {
    return join(realpathOfNearest(parent), basename(path));
  }
}

/**
 * A variable set in `.env` or the environment that is not an option but looks like one mistyped
 * (`WATCH_DIRECTORY`, `AFTER_UPLAOD`, `ARCHIVE_DIR`) is ignored, and the default applies in its
 * place without a word: say so. Other variables (PATH, TZ) are none of the uploader's business.
 */
function noteMistypedNames(ctx: Ctx): void {
  const known = OPTIONS.map((spec) => spec.env);
  const layers: [string, Readonly<Record<string, string | undefined>>][] = [
    [ctx.envFile, ctx.dotenv],
    ['the environment', ctx.env],
  ];
  for (const [where, variables] of layers) {
    for (const name of Object.keys(variables)) {
      if (!/^[A-Z][A-Z0-9_]*$/.test(name) || (known as readonly string[]).includes(name)) continue;
      const near = closestName(name, known) ?? (name.length >= 6 ? known.find((option) => option.startsWith(name)) : undefined);
      if (near !== undefined) ctx.notes.push(`${where} sets ${name}, which is not an option, and is ignored: did you mean ${near}?`);
    }
  }
}

/** `$XDG_STATE_HOME/immich-auto-uploader` when XDG_STATE_HOME is set (freedesktop's place for state). */
function xdgStateDefault(ctx: Ctx): Raw | undefined {
  const base = nonEmpty(ctx.env.XDG_STATE_HOME) ?? nonEmpty(ctx.dotenv.XDG_STATE_HOME);
  return base === undefined ? undefined : { text: join(base, 'immich-auto-uploader'), source: { kind: 'default' } };
}

/**
 * The state folder is made private to the uploader's user (0700): it may not be a watch folder or
 * the archive, nor hold one, whose files others (Samba, Syncthing) must go on reaching. Inside
 * one, it is left out of watching.
 */
function checkStateAgainstFolders(ctx: Ctx, stateDirectory: string, watchFolders: readonly string[], archive: string | undefined): void {
  const spec = optionSpec('stateDirectory');
  const raw = pickOrDefault(ctx, spec);
  const folders = [...watchFolders.map((folder) => ({ folder, what: 'the watch folder' })), ...(archive === undefined ? [] : [{ folder: archive, what: 'the archive' }])];
  for (const { folder, what } of folders) {
    if (!isAtOrInside(folder, stateDirectory)) continue;
    const is = folder === stateDirectory ? `${what} itself` : `a folder holding ${what} ${folder}`;
    report(
      ctx,
      spec,
      raw.source,
      'a folder of its own, made private to this user',
      `${stateDirectory}, ${is}`,
      `${setHint(spec, raw.source, '<a folder of its own>')}, e.g. ${spec.default}`,
    );
    return;
  }
}

/**
 * Refuses archive/watch overlaps that would loop (they matter only when files are moved there:
 * `moving`), and returns the archive folders to leave out of watching: one inside a watch folder.
 */
function checkArchiveAgainstWatch(ctx: Ctx, watchFolders: readonly string[], archive: string, moving: boolean): string[] {
  const spec = optionSpec('archiveDirectory');
  const raw = pickOrDefault(ctx, spec);
  const excluded: string[] = [];
  for (const folder of watchFolders) {
    if (!moving) {
      // What an earlier move mode archived there is not picked up (and, in delete mode, deleted).
      if (isInside(archive, folder)) {
        excluded.push(archive);
        ctx.facts.push(`${spec.env} ${archive} is inside the watch folder ${folder}: it is not watched, so what is archived there stays`);
      }
    } else if (folder === archive) {
      report(
        ctx,
        spec,
        raw.source,
        'a folder that is not a watch folder',
        `${archive}, which is also in WATCH_DIRECTORIES (archived files would be picked up again)`,
        raw.text === spec.default
          ? `${setHint(spec, raw.source, '<another folder>')}`
          : `${setHint(spec, raw.source, '<another folder>')}, e.g. ${spec.default}`,
      );
    } else if (isInside(folder, archive)) {
      report(
        ctx,
        spec,
        raw.source,
        'a folder that contains no watch folder',
        `${archive}, which contains the watch folder ${folder} (files would loop from archive to upload and back)`,
        `${setHint(spec, raw.source, '<a folder outside the watch folders>')}, or move ${folder} out of it`,
      );
    } else if (isInside(archive, folder)) {
      // Refusing would be legitimate too, but "archive next to the incoming files" is a common
      // layout (e.g. ~/Downloads/Archived), and excluding it from watching is all it takes.
      excluded.push(archive);
      ctx.facts.push(`${spec.env} ${archive} is inside the watch folder ${folder}: it will not be watched`);
    }
  }
  return excluded;
}

/**
 * A Set whose mutators throw: `Object.freeze` alone does not stop `Set.prototype.add`, and a
 * frozen Config must not change under the pipeline's feet.
 */
function freezeSet<T>(values: Iterable<T>): ReadonlySet<T> {
  const set = new Set(values);
  const refuse = (): never => {
    throw new TypeError('Config.supportedExtensions is read-only');
  };
  Object.defineProperties(set, { add: { value: refuse }, delete: { value: refuse }, clear: { value: refuse } });
  return Object.freeze(set);
}
