/**
 * Every setting of the uploader, declared once.
 *
 * Each entry names the option's key (as commander reports it in `opts()`), its environment
 * variable, its flag, its default exactly as a user would write it, a one-line description and
 * the kind of value it takes. Everything else is derived from this list: the commander flags and
 * their `--help` text ({@link addOptions}), the README's table ({@link renderOptionsTable}),
 * `.env.example` ({@link renderEnvExample}) and the parsing in `config.ts`, which reads the
 * defaults from here so that what the docs say is what the code does.
 *
 * Precedence: a flag wins over the environment, which wins over `./.env`.
 */
import { Option, type Command } from 'commander';

/**
 * setTimeout stores its delay in a signed 32-bit integer; a longer delay overflows and Node
 * fires the timer after 1 ms instead, which would turn "rescan every 30 days" into a busy loop.
 */
export const MAX_TIMER_SECONDS = 2_147_483;

/** How an option's text is turned into a value; `config.ts` has one parser per kind. */
export type ValueKind =
  /** An http(s) URL, normalised to end in `/api`. */
  | { readonly type: 'url' }
  /** Free text that is never printed (the API key). */
  | { readonly type: 'secret' }
  /** A file path; `~` is the user's home, relative paths start at the working folder. */
  | { readonly type: 'file' }
  /** A folder that need not exist yet. */
  | { readonly type: 'folder' }
  /** Comma-separated existing folders. */
  | { readonly type: 'folderList' }
  /** true/false/1/0/yes/no/on/off, any case. */
  | { readonly type: 'boolean' }
  /** A decimal number with a lower bound; seconds are also capped at {@link MAX_TIMER_SECONDS}. */
  | {
      readonly type: 'number';
      readonly unit: 'seconds' | 'megabytes';
      readonly min: number;
      /** Whether `min` itself is allowed. */
      readonly minInclusive: boolean;
    }
  /** A whole number in `[min, max]`. */
  | { readonly type: 'integer'; readonly min: number; readonly max: number }
  /** One of `values`, any case; `aliases` map other spellings onto them. */
  | {
      readonly type: 'enum';
      readonly values: readonly string[];
      readonly aliases?: Readonly<Record<string, string>>;
    }
  /** Comma-separated file extensions, any case, with or without a dot. */
  | { readonly type: 'extensionList' };

export interface OptionSpec {
  /** camelCase; equal to commander's attribute name for `flag`, so `opts()[key]` is the flag's value. */
  readonly key: string;
  /** The environment (and `.env`) variable. */
  readonly env: string;
  /** The long flag without its value, e.g. `--api-url`. */
  readonly flag: string;
  /** Placeholder for the flag's value in `--help`, e.g. `url` in `--api-url <url>`. */
  readonly valueName: string;
  /** The default as a user would write it; parsed by the same code as user input. */
  readonly default?: string;
  /** `true`, or the variable whose presence makes this one optional. */
  readonly required?: true | { readonly unless: string };
  /** Sample value for `.env.example` and for "fix:" hints when there is no default. */
  readonly example?: string;
  /** One line, shown in `--help`, the README and `.env.example`. */
  readonly description: string;
  /** A secret is never printed: not in help, logs, errors or docs. */
  readonly secret: boolean;
  readonly kind: ValueKind;
}

const SECONDS_WAIT = { type: 'number', unit: 'seconds', min: 0, minInclusive: true } as const;
const SECONDS_INTERVAL = { type: 'number', unit: 'seconds', min: 0, minInclusive: false } as const;

/** All options, in the order `--help`, the README and `.env.example` show them. */
export const OPTIONS = [
  {
    key: 'apiUrl',
    env: 'IMMICH_API_URL',
    flag: '--api-url',
    valueName: 'url',
    required: true,
    example: 'http://immich.local:2283',
    description: 'URL of the Immich server, with or without /api',
    secret: false,
    kind: { type: 'url' },
  },
  {
    key: 'apiKey',
    env: 'IMMICH_API_KEY',
    flag: '--api-key',
    valueName: 'key',
    required: { unless: 'IMMICH_API_KEY_FILE' },
    example: 'your-api-key',
    description: 'Immich API key (Account Settings > API Keys); a flag is visible to other users in ps',
    secret: true,
    kind: { type: 'secret' },
  },
  {
    key: 'apiKeyFile',
    env: 'IMMICH_API_KEY_FILE',
    flag: '--api-key-file',
    valueName: 'path',
    example: '/run/secrets/immich_api_key',
    description: 'Read the API key from this file instead (Docker secrets); give only one of the two',
    secret: false,
    kind: { type: 'file' },
  },
  {
    key: 'watchDirectories',
    env: 'WATCH_DIRECTORIES',
    flag: '--watch-directories',
    valueName: 'dirs',
    default: '~/Downloads,~/Pictures/Camera',
    description: 'Folders to watch, comma-separated',
    secret: false,
    kind: { type: 'folderList' },
  },
  {
    key: 'archiveDirectory',
    env: 'ARCHIVE_DIRECTORY',
    flag: '--archive-directory',
    valueName: 'dir',
    default: '~/Pictures/Archived',
    description: 'Where originals are moved after upload; created on first use',
    secret: false,
    kind: { type: 'folder' },
  },
  {
    key: 'afterUpload',
    env: 'AFTER_UPLOAD',
    flag: '--after-upload',
    valueName: 'mode',
    default: 'move',
    description:
      'What happens to an original once the server has it: move (into ARCHIVE_DIRECTORY), delete (with the .xmp sidecar that went with it) or keep (leave it in place)',
    secret: false,
    kind: { type: 'enum', values: ['move', 'delete', 'keep'] },
  },
  {
    key: 'removeEmptyFolders',
    env: 'REMOVE_EMPTY_FOLDERS',
    flag: '--remove-empty-folders',
    valueName: 'bool',
    default: 'false',
    description:
      'Move and delete modes: remove a sub-folder of a watch folder once the uploader has taken its last file and it stayed empty for FILE_STABILITY_WAIT_SECONDS',
    secret: false,
    kind: { type: 'boolean' },
  },
  {
    key: 'stateDirectory',
    env: 'STATE_DIRECTORY',
    flag: '--state-directory',
    valueName: 'dir',
    default: '~/.local/state/immich-auto-uploader',
    description:
      'Where the journal (what was uploaded, archived, failed) is kept; default $XDG_STATE_HOME/immich-auto-uploader when XDG_STATE_HOME is set',
    secret: false,
    kind: { type: 'folder' },
  },
  {
    key: 'watchRecursive',
    env: 'WATCH_RECURSIVE',
    flag: '--watch-recursive',
    valueName: 'bool',
    default: 'true',
    description: 'Also watch sub-folders of the watch folders',
    secret: false,
    kind: { type: 'boolean' },
  },
  {
    key: 'supportedExtensions',
    env: 'SUPPORTED_EXTENSIONS',
    flag: '--supported-extensions',
    valueName: 'exts',
    default: 'jpg,jpeg,png,gif,bmp,tiff,webp,mp4,mov,avi,mkv,wmv,flv,m4v,3gp',
    description: 'File extensions to upload, comma-separated, any case, with or without the dot (xmp sidecars go with their photo, never on their own)',
    secret: false,
    kind: { type: 'extensionList' },
  },
  {
    key: 'maxFileSizeMb',
    env: 'MAX_FILE_SIZE_MB',
    flag: '--max-file-size-mb',
    valueName: 'mb',
    default: '1000',
    description: 'Skip files larger than this many MB (1 MB = 1024 x 1024 bytes)',
    secret: false,
    kind: { type: 'number', unit: 'megabytes', min: 0, minInclusive: false },
  },
  {
    key: 'fileStabilityWaitSeconds',
    env: 'FILE_STABILITY_WAIT_SECONDS',
    flag: '--file-stability-wait-seconds',
    valueName: 'seconds',
    default: '5',
    description: 'Seconds a file must stay unchanged before it counts as finished',
    secret: false,
    kind: SECONDS_WAIT,
  },
  {
    key: 'fileStabilityCheckInterval',
    env: 'FILE_STABILITY_CHECK_INTERVAL',
    flag: '--file-stability-check-interval',
    valueName: 'seconds',
    default: '1.0',
    description: 'Seconds between checks while a file settles (at least 0.05)',
    secret: false,
    kind: { type: 'number', unit: 'seconds', min: 0.05, minInclusive: true },
  },
  {
    key: 'logLevel',
    env: 'LOG_LEVEL',
    flag: '--log-level',
    valueName: 'level',
    default: 'INFO',
    description: 'How much to log: trace, debug, info, warn, error, fatal or silent (any case)',
    secret: false,
    kind: {
      type: 'enum',
      values: ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'],
      // The Python tool used the logging module's names, where WARNING is the usual spelling.
      aliases: { warning: 'warn' },
    },
  },
  {
    key: 'uploadConcurrency',
    env: 'UPLOAD_CONCURRENCY',
    flag: '--upload-concurrency',
    valueName: 'n',
    default: '4',
    description: 'Uploads running at the same time (1 to 32)',
    secret: false,
    kind: { type: 'integer', min: 1, max: 32 },
  },
  {
    key: 'logFormat',
    env: 'LOG_FORMAT',
    flag: '--log-format',
    valueName: 'format',
    default: 'auto',
    description: 'Log output: auto (pretty on a terminal, JSON otherwise), pretty or json',
    secret: false,
    kind: { type: 'enum', values: ['auto', 'pretty', 'json'] },
  },
  {
    key: 'rescanIntervalSeconds',
    env: 'RESCAN_INTERVAL_SECONDS',
    flag: '--rescan-interval-seconds',
    valueName: 'seconds',
    default: '300',
    description: 'Seconds between full rescans that catch files the file events missed',
    secret: false,
    kind: SECONDS_INTERVAL,
  },
  {
    key: 'watchPolling',
    env: 'WATCH_POLLING',
    flag: '--watch-polling',
    valueName: 'bool',
    default: 'false',
    description: 'Use no file events, only rescan every WATCH_POLL_INTERVAL_SECONDS (NFS/SMB shares)',
    secret: false,
    kind: { type: 'boolean' },
  },
  {
    key: 'watchPollIntervalSeconds',
    env: 'WATCH_POLL_INTERVAL_SECONDS',
    flag: '--watch-poll-interval-seconds',
    valueName: 'seconds',
    default: '10',
    description: 'Seconds between rescans when WATCH_POLLING is on',
    secret: false,
    kind: SECONDS_INTERVAL,
  },
  {
    key: 'shutdownGraceSeconds',
    env: 'SHUTDOWN_GRACE_SECONDS',
    flag: '--shutdown-grace-seconds',
    valueName: 'seconds',
    default: '30',
    description: 'Seconds in-flight uploads may take to finish after SIGINT/SIGTERM',
    secret: false,
    kind: SECONDS_WAIT,
  },
] as const satisfies readonly OptionSpec[];

export type OptionKey = (typeof OPTIONS)[number]['key'];
/** The declaration of one option, with its literal types kept. */
export type OptionOf<K extends OptionKey> = Extract<(typeof OPTIONS)[number], { key: K }>;

/** The declaration of `key`. */
export function optionSpec<K extends OptionKey>(key: K): OptionOf<K> {
  const spec = OPTIONS.find((o) => o.key === key);
  if (spec === undefined) throw new Error(`unknown option ${key}`);
  return spec as OptionOf<K>;
}

/**
 * The flag with its value placeholder as commander wants it. Booleans take an optional value so
 * that a bare `--watch-recursive` means true and `--watch-recursive false` still works.
 */
export function flagWithValue(spec: OptionSpec): string {
  return spec.kind.type === 'boolean' ? `${spec.flag} [${spec.valueName}]` : `${spec.flag} <${spec.valueName}>`;
}

/** `required`, `required unless X is set`, or `default: <value>`; `undefined` when none applies. */
function requirement(spec: OptionSpec): string | undefined {
  if (spec.required === true) return 'required';
  if (spec.required !== undefined) return `required unless ${spec.required.unless} is set`;
  if (spec.default !== undefined) return `default: ${spec.default}`;
  return undefined;
}

/** The `--help` line: description, then where else the value can come from and its default. */
export function helpText(spec: OptionSpec): string {
  const extra = [`env ${spec.env}`, requirement(spec)].filter((s) => s !== undefined).join(', ');
  return `${spec.description} (${extra})`;
}

/**
 * Registers one flag per option on `command`. No commander defaults and no commander `.env()`:
 * `opts()` must hold only what the user typed, so that `loadConfig` can apply the precedence
 * flag > environment > .env > default itself and validate every value with one set of messages.
 * `only` limits the flags to those options (commands that read the journal need one).
 */
export function addOptions(command: Command, only?: readonly OptionKey[]): void {
  for (const spec of OPTIONS) {
    if (only && !only.includes(spec.key)) continue;
    command.addOption(new Option(flagWithValue(spec), helpText(spec)));
  }
}

function cell(text: string): string {
  return text.replaceAll('|', '\\|');
}

/** The README's options table (Markdown): variable | flag | default | meaning. */
export function renderOptionsTable(): string {
  const rows = OPTIONS.map((spec: OptionSpec) => {
    const dflt =
      spec.required === true
        ? '*required*'
        : spec.required !== undefined
          ? `*required unless \`${spec.required.unless}\`*`
          : spec.default !== undefined
            ? `\`${spec.default}\``
            : '*none*';
    const meaning = spec.secret ? `${spec.description}. Secret: never printed.` : spec.description;
    return `| \`${spec.env}\` | \`${cell(flagWithValue(spec))}\` | ${cell(dflt)} | ${cell(meaning)} |`;
  });
  return ['| Variable | Flag | Default | Meaning |', '| --- | --- | --- | --- |', ...rows].join('\n') + '\n';
}

/**
 * `.env.example`: every variable with a comment. Required ones are set to a placeholder so the
 * file shows what must be filled in; the rest are commented out with their defaults, so that
 * copying the file changes nothing until a line is uncommented.
 */
export function renderEnvExample(): string {
  const lines = [
    '# immich-auto-uploader settings. Copy this file to .env in the folder you start the uploader from.',
    '# Command-line flags win over the environment, and the environment wins over .env.',
    '# Generated from src/options.ts by `node --import tsx scripts/gen-docs.ts`; edit that file, not this one.',
  ];
  for (const spec of OPTIONS as readonly OptionSpec[]) {
    const req = requirement(spec);
    lines.push('', `# ${spec.description}.`, `# Flag: ${flagWithValue(spec)}${req === undefined ? '' : `; ${req}`}.`);
    if (spec.required !== undefined) lines.push(`${spec.env}=${spec.example ?? ''}`);
    else lines.push(`# ${spec.env}=${spec.default ?? spec.example ?? ''}`);
  }
  return lines.join('\n') + '\n';
}

export const TABLE_START = '<!-- options:start -->';
export const TABLE_END = '<!-- options:end -->';

/**
 * `readme` with the text between the option markers replaced by {@link renderOptionsTable}.
 * Everything outside the markers is left byte for byte, since others write the rest of the README.
 */
export function spliceOptionsTable(readme: string): string {
  const start = readme.indexOf(TABLE_START);
  const end = readme.indexOf(TABLE_END);
  if (start === -1 || end === -1 || end < start) {
    throw new Error(`README must contain ${TABLE_START} followed by ${TABLE_END}`);
  }
  const before = readme.slice(0, start + TABLE_START.length);
  return `${before}\n\n${renderOptionsTable()}\n${readme.slice(end)}`;
}
