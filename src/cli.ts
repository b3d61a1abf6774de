#!/usr/bin/env node
/**
 * The command line: parses, hands over, and maps what comes back to an exit code. The only
 * place in the project that installs signal handlers or calls process.exit.
 */
import { readFileSync } from 'node:fs';
import { homedir, uptime } from 'node:os';
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { join } from 'node:path';
import { formatCheckLine, runChecks } from './commands/check.js';
import { DEFAULT_HEALTH_GRACE_SECONDS, judgeHealth } from './commands/health.js';
import { requestRetry, STATE_FROM } from './commands/retry.js';
import { buildStatus, formatHistory, formatStatus, historyQuery } from './commands/status.js';
import { ConfigError, loadConfig, loadStateDirectory, type Config, type LoadConfigInput } from './config.js';
import { MissingPermissionError, runUploader, StartError, type RunMode } from './daemon.js';
import { isImmichError, isMissingPermission } from './immich/errors.js';
import { Journal, JOURNAL_FILE } from './journal/journal.js';
import { isLocked, stateFolderReadable } from './journal/lock.js';
import { JournalError } from './journal/states.js';
import { createImmichClient } from './immich/http-client.js';
import { addOptions } from './options.js';
import { simulatedCrossDeviceFs } from './pipeline/archive.js';
import { readAwayDisks } from './pipeline/disks.js';
import { formatSummary, type StatsSnapshot } from './pipeline/stats.js';
import { NotMountedError, type SystemFiles } from './support/mount-table.js';
import { createLogger, hideSecrets, type Logger } from './support/logger.js';
import { messageOf } from './support/message.js';
import { readProblems } from './support/problems.js';
import { closestName } from './support/similar.js';

/** Exit codes, documented in the README. */
export const EXIT = {
  ok: 0,
  /** A runtime failure: some file failed (`once`), the server could not be reached, a bug. */
  failure: 1,
  /** Configuration or usage error: nothing was done. */
  usage: 2,
  /** The server rejected the API key, or the key may not upload. */
  keyRejected: 3,
} as const;

const COMMANDS: { name: RunMode | 'check'; summary: string }[] = [
  { name: 'watch', summary: 'upload what is in the watch folders, then keep watching until stopped (default)' },
  { name: 'once', summary: 'upload what is in the watch folders now, then exit (0: all done, 1: some failed)' },
  { name: 'check', summary: 'check the configuration, the server, the key and the folders; change nothing' },
];

const JOURNAL_COMMANDS = ['status', 'history', 'retry', 'health'] as const;
type JournalCommand = (typeof JOURNAL_COMMANDS)[number];

async function main(argv: string[]): Promise<number> {
  let exitCode: number = EXIT.ok;
  const program = new Command('immich-auto-uploader')
    .description('Empties watched folders into Immich: each finished photo or video is uploaded once, then archived.')
    .version(readVersion(), '-V, --version')
    .exitOverride()
    .showSuggestionAfterError()
    // Inherited by the commands below. A flag's value is never repeated: it may be the key.
    .configureOutput({ outputError: (text, write) => write(usageError(text, argv, program.commands.map((command) => command.name()))) });
  for (const { name, summary } of COMMANDS) {
    const command = program.command(name, { isDefault: name === 'watch' }).description(summary).exitOverride();
    addOptions(command);
    command.action(async (flags: Record<string, unknown>) => {
      exitCode = await runCommand(name, flags);
    });
  }
  program
    .command('status')
    .description('what the journal knows: counts per state, failures, recent outcomes, totals')
    .option('--json', 'print JSON for scripts')
    .option('--recent <n>', 'how many recent outcomes to list (a whole number, 0 or more)', wholeNumber, 10)
    .exitOverride()
    .action((flags: Record<string, unknown>) => {
      exitCode = runJournalCommand('status', flags);
    });
  program
    .command('history')
    .description('where a file went and when: its asset id and archive path')
    .argument('<path-or-name>', "a full path, a file name or part of a path, in the watch folder or the archive, or an asset id")
    .exitOverride()
    .action((query: string, flags: Record<string, unknown>) => {
      exitCode = runJournalCommand('history', { ...flags, query });
    });
  program
    .command('retry')
    .description('make failed files eligible again now (a running uploader picks them up)')
    .exitOverride()
    .action((flags: Record<string, unknown>) => {
      exitCode = runJournalCommand('retry', flags);
    });
  program
    .command('health')
    .description('exit 0 while an uploader runs and nothing has kept it from its work for long, 1 otherwise (for health checks)')
    .option(
      '--grace <seconds>',
      'how long a problem (the server not answering, the archive disk away) may last before it counts',
      wholeNumber,
      DEFAULT_HEALTH_GRACE_SECONDS,
    )
    .exitOverride()
    .action((flags: Record<string, unknown>) => {
      exitCode = runJournalCommand('health', flags);
    });
  for (const name of JOURNAL_COMMANDS) {
    const command = program.commands.find((c) => c.name() === name);
    // They read the journal only: the one option that matters is where it is.
    if (command) addOptions(command, ['stateDirectory']);
  }
  // `watch` is the default command, so commander would take a mistyped command for its argument.
  const first = argv[2];
  const names = program.commands.map((command) => command.name());
  if (first !== undefined && !first.startsWith('-') && first !== 'help' && !names.includes(first)) {
    // Repeated only if it looks like a word: the key pasted there must not be.
    const shown = /^[a-z][a-z-]{0,19}$/i.test(first) ? ` '${first}'` : ' (not repeated, in case it is a secret)';
    const near = closestName(first, names);
    process.stderr.write(`error: unknown command${shown}${near === undefined ? '' : ` (did you mean '${near}'?)`}; the commands are ${names.join(', ')}\n`);
    return EXIT.usage;
  }
  try {
    await program.parseAsync(argv);
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and version end in a CommanderError too; commander already printed the text.
      return error.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    throw error;
  }
  return exitCode;
}

/**
 * Commander's error, without the value of any `--flag=value` it repeats (`--api-key=...` given
 * to a command without that option); options given before the command are pointed out.
 */
function usageError(text: string, argv: readonly string[], names: readonly string[]): string {
  const command = argv.slice(3).find((word) => names.includes(word));
  if (text.includes("too many arguments for 'watch'") && command !== undefined) {
    return `error: options go after the command: immich-auto-uploader ${command} [options]\n`;
  }
  return text.replace(/(--[\w-]+)=[^'\s]*/g, '$1=...');
}

/** `--recent`'s and `--grace`'s value: commander says what is wrong with anything else, and the CLI exits 2. */
function wholeNumber(text: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(value)) throw new InvalidArgumentError('expected a whole number, 0 or more (e.g. 20).');
  return value;
}

/** One line per problem, then what may have caused one (a mistyped variable left the default in place). */
function reportConfigError(error: ConfigError): number {
  for (const problem of error.problems) process.stderr.write(`configuration error: ${problem}\n`);
  for (const note of error.notes) process.stderr.write(`note: ${note}\n`);
  return EXIT.usage;
}

function configInput(flags: Record<string, unknown>): LoadConfigInput {
  return { flags, env: process.env, cwd: process.cwd(), homeDir: homeFolder() };
}

/** The user's home folder; undefined for a user with none (no HOME, no entry in /etc/passwd: a bare uid in a container). */
function homeFolder(): string | undefined {
  try {
    return homedir();
  } catch {
    return undefined;
  }
}

/** STATE_DIRECTORY, or undefined when it is not valid (the configuration then says why). */
function stateDirectoryIfValid(flags: Record<string, unknown>): string | undefined {
  try {
    return loadStateDirectory(configInput(flags));
  } catch {
    return undefined;
  }
}

/** `status`, `history`, `retry`, `health`: they need only the state folder, not the server or the watch folders. */
function runJournalCommand(name: JournalCommand, flags: Record<string, unknown>): number {
  let directory: string;
  try {
    directory = loadStateDirectory(configInput(flags));
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return reportConfigError(error);
  }
  const logger = createLogger({ level: 'warn', format: 'auto', destination: process.stderr });
  try {
    // Throws when the folder cannot be read: it would look empty, though an uploader uses it.
    stateFolderReadable(directory);
    if (name === 'retry') {
      process.stdout.write(`${requestRetry(directory, logger)}\n`);
      return EXIT.ok;
    }
    if (name === 'health') {
      const verdict = judgeHealth({
        running: isLocked(directory),
        problems: readProblems(directory),
        now: Date.now(),
        uptime: uptime(),
        graceMs: Number(flags.grace) * 1000,
        directory,
      });
      process.stdout.write(`${verdict.line}\n`);
      return verdict.healthy ? EXIT.ok : EXIT.failure;
    }
    const journal = Journal.openReadOnly(directory);
    if (!journal) {
      process.stdout.write(`no journal yet in ${directory}: nothing has been uploaded with this STATE_DIRECTORY (${STATE_FROM})\n`);
      return EXIT.ok;
    }
    try {
      if (name === 'history') {
        const query = historyQuery(String(flags.query));
        const entries = journal.history(query);
        process.stdout.write(formatHistory(entries, query));
        // For a script: found or not.
        return entries.length > 0 ? EXIT.ok : EXIT.failure;
      }
      const now = new Date();
      const report = buildStatus({
        journal,
        file: join(directory, JOURNAL_FILE),
        running: isLocked(directory),
        problems: readProblems(directory),
        now,
        recent: Number(flags.recent),
      });
      process.stdout.write(flags.json ? `${JSON.stringify(report, null, 2)}\n` : formatStatus(report, now, uptime()));
      return EXIT.ok;
    } finally {
      journal.close();
    }
  } catch (error) {
    if (error instanceof JournalError) {
      process.stderr.write(`${error.message}\n`);
      return EXIT.failure;
    }
    throw error;
  }
}

async function runCommand(name: RunMode | 'check', flags: Record<string, unknown>): Promise<number> {
  let config: Config;
  let notes: string[];
  let facts: string[];
  try {
    // A watch folder on a disk that /etc/fstab mounts, or that an earlier start noted, may be
    // missing while the disk is not mounted yet.
    ({ config, notes, facts } = loadConfig({ ...configInput(flags), unmountedDisk: await readAwayDisks(systemFiles(), stateDirectoryIfValid(flags)) }));
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return reportConfigError(error);
  }
  if (name === 'check') return check(config, [...notes, ...facts]);

  const logger = createLogger({ level: config.logLevel, format: config.logFormat, secrets: [config.apiKey] });
  for (const note of notes) logger.warn(note);
  for (const fact of facts) logger.info(fact);
  const stop = new AbortController();
  const abortNow = new AbortController();
  let countsNow: (() => StatsSnapshot) | undefined;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (!stop.signal.aborted) {
      logger.info(
        `${signal}: stopping; uploads in progress may finish within ${config.shutdownGraceMs / 1000} s (send it again to abort them now)`,
      );
      stop.abort();
      return;
    }
    // Second signal: leave at once. Nothing unconfirmed is archived, so nothing is lost: the
    // files not finished stay in the watch folders for the next run.
    logger.warn(`${signal} again: aborting now`);
    const counts = countsNow?.();
    if (counts) logger.info(counts, `summary: ${formatSummary(counts)}`);
    abortNow.abort();
    // `once` did not finish: not "all well" for the script that runs it.
    process.exit(name === 'once' ? EXIT.failure : EXIT.ok);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const summary = await runUploader({
      config,
      mode: name,
      logger,
      stop: stop.signal,
      abortNow: abortNow.signal,
      // Test hook, not a user option: the crash tests run the cross-device archive path on one disk.
      archiveFs: process.env.IMMICH_AUTO_UPLOADER_SIMULATE_EXDEV === '1' ? simulatedCrossDeviceFs() : undefined,
      system: systemFiles(),
      onCounts: (now) => (countsNow = now),
      // Test hook, not a user option: the end-to-end test of `once` giving up on the server.
      ...(process.env.IMMICH_AUTO_UPLOADER_ONCE_PATIENCE_MS ? { oncePatienceMs: Number(process.env.IMMICH_AUTO_UPLOADER_ONCE_PATIENCE_MS) } : {}),
    });
    // A folder `once` could not read may hold files it did not see; a `once` stopped (or that gave
    // up on the server) did not finish.
    const incomplete = summary.failed > 0 || summary.left > 0 || (summary.unreadable ?? 0) > 0 || summary.interrupted > 0 || stop.signal.aborted;
    return name === 'once' && incomplete ? EXIT.failure : EXIT.ok;
  } catch (error) {
    return reportRunError(error, logger);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

async function check(config: Config, notes: string[]): Promise<number> {
  for (const note of notes) process.stdout.write(`note    ${note}\n`);
  process.stdout.write('ok      configuration valid\n');
  const client = createImmichClient({ apiUrl: config.apiUrl, apiKey: config.apiKey, inactivityTimeoutMs: 15_000 });
  try {
    const report = await runChecks(config, client, systemFiles());
    for (const line of report.lines) process.stdout.write(`${hideSecrets(formatCheckLine(line), [config.apiKey])}\n`);
    if (report.keyRejected) return EXIT.keyRejected;
    return report.lines.every((line) => line.ok) ? EXIT.ok : EXIT.failure;
  } finally {
    client.close();
  }
}

/** Test hooks, not user options: a mount table and an fstab of a test's own (a network share, a disk not mounted). */
function systemFiles(): SystemFiles {
  return { mountTable: process.env.IMMICH_AUTO_UPLOADER_MOUNT_TABLE, fstab: process.env.IMMICH_AUTO_UPLOADER_FSTAB };
}

function reportRunError(error: unknown, logger: Logger): number {
  if (isImmichError(error) && error.kind === 'auth') {
    logger.fatal(
      { status: error.status },
      `the Immich server rejected the API key (${error.message}); fix: create a key in Immich under Account Settings > API Keys and set IMMICH_API_KEY (or put it in the file IMMICH_API_KEY_FILE names)`,
    );
    return EXIT.keyRejected;
  }
  if (isImmichError(error) && isMissingPermission(error)) {
    logger.fatal(
      { status: error.status },
      `the API key may no longer upload (${error.message}); fix: in Immich, Account Settings > API Keys, give the key the permission asset.upload, or create one with it`,
    );
    return EXIT.keyRejected;
  }
  if (error instanceof MissingPermissionError) {
    logger.fatal(error.message);
    return EXIT.keyRejected;
  }
  if (error instanceof JournalError || error instanceof NotMountedError || error instanceof StartError) {
    // Another instance holds the journal, it was written by a newer version, a folder's disk
    // is not mounted, the server is too old, or the archive folder cannot be made: say so plainly.
    logger.fatal(error.message);
    return EXIT.failure;
  }
  const message = messageOf(error);
  logger.fatal(message);
  // A stack helps a bug report, never a user: only at debug level.
  if (error instanceof Error && !isImmichError(error)) logger.debug({ stack: error.stack }, 'stack trace');
  return EXIT.failure;
}

function readVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

// Everything long-lived was closed by now; exiting explicitly guarantees that a stray handle
// (a slow DNS lookup, a half-closed socket) cannot keep a finished `once` run alive.
main(process.argv).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`immich-auto-uploader: ${messageOf(error)}\n`);
    process.exit(EXIT.failure);
  },
);
