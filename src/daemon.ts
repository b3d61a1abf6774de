import { setMaxListeners } from 'node:events';
import { accessSync, constants } from 'node:fs';
import { rm, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import PQueue from 'p-queue';
import type { Logger } from 'pino';
import type { Config } from './config.js';
import { MIN_SERVER_MAJOR, type ImmichClient, type ServerVersion } from './immich/client.js';
import { ImmichError, isImmichError } from './immich/errors.js';
import { createImmichClient } from './immich/http-client.js';
import { mayBeDown, raceAbort, ResilientImmich, ServerGate, type Patience } from './immich/resilient.js';
import { Journal } from './journal/journal.js';
import { acquireLock } from './journal/lock.js';
import { keepingArchiveDirectory, nodeArchiveFs, threadedArchiveFs, type ArchiveFs } from './pipeline/archive.js';
import { ArchiveFull, ArchiveMount, archiveDiskAway, notMountedError, readAwayDisks, rememberDisk } from './pipeline/disks.js';
import { ArchiveTemporaries } from './pipeline/archive-temporaries.js';
import { WHOLE_FILE_MAX_BYTES } from './pipeline/hash.js';
import { lstatForSettle, settleStatFrom } from './pipeline/settle.js';
import { EmptyFolders, readWaitingFolders, saveWaitingFolders } from './pipeline/empty-folders.js';
import { LateSidecars } from './pipeline/late-sidecars.js';
import { LateWrites } from './pipeline/late-writes.js';
import { forgetVanishedFailures, recoverUnfinished } from './pipeline/recover.js';
import { sentSidecarOf, sidecarSentTo } from './pipeline/sidecar.js';
import { makeRecorder, type Recorder } from './pipeline/states.js';
import type { Candidate } from './pipeline/types.js';
import { CheckBatcher } from './pipeline/check.js';
import { Coordinator } from './pipeline/coordinator.js';
import { Detector, networkShareAdvice, tooLarge } from './pipeline/detect.js';
import { processFile } from './pipeline/process-file.js';
import { formatSummary, RunStats, type StatsSnapshot } from './pipeline/stats.js';
import { systemClock, type Clock } from './support/clock.js';
import { retry } from './support/retry.js';
import { FsWorker } from './support/fs-worker.js';
import { limitWhileWaiting } from './support/limit.js';
import { messageOf } from './support/message.js';
import { MountTable, networkFileSystemOf, readMountTable, type SystemFiles } from './support/mount-table.js';
import { makeFoldersSync } from './support/paths.js';
import { Problems } from './support/problems.js';

export type RunMode = 'watch' | 'once';

/** The key is valid but may not upload. */
export class MissingPermissionError extends Error {
  override readonly name = 'MissingPermissionError';
  constructor(keyName: string, permission: string) {
    super(
      `the API key "${keyName}" lacks the permission ${permission}; ` +
        `fix: in Immich, Account Settings > API Keys, create a key with ${permission}`,
    );
  }
}

/** Why the uploader cannot start, said in one line with its fix: no stack trace is of use. */
export class StartError extends Error {
  override readonly name: string = 'StartError';
}

/** The server is older than {@link MIN_SERVER_MAJOR}. */
export class ServerTooOldError extends StartError {
  override readonly name = 'ServerTooOldError';
  constructor(version: ServerVersion) {
    super(`Immich ${version.major}.${version.minor}.${version.patch} is too old for this uploader, which needs Immich 2.x or 3.x; fix: upgrade Immich`);
  }
}

export interface RunOptions {
  config: Config;
  mode: RunMode;
  logger: Logger;
  /** First SIGINT/SIGTERM: stop discovering, let in-flight uploads finish within the grace period. */
  stop: AbortSignal;
  /** Second signal: abort in-flight work now. */
  abortNow?: AbortSignal;
  clock?: Clock;
  client?: ImmichClient;
  /** The archive's file operations; tests inject a simulated cross-device file system. */
  archiveFs?: ArchiveFs;
  /** The mount table and fstab to read; tests give their own. */
  system?: SystemFiles;
  /** Given, once the pipeline runs, a way to read its counts now (a second signal prints them as it leaves). */
  onCounts?: (now: () => StatsSnapshot) => void;
  /** `once`'s patience with the server, and how long a 404 at start is tried again (ONCE_PATIENCE_MS); tests shorten it. */
  oncePatienceMs?: number;
}

/** How often a running daemon logs its counts (only when they changed). */
const SUMMARY_INTERVAL_MS = 10 * 60_000;
/** Listeners on the shutdown signals: one per file waiting for a hash or upload slot, and then some. */
const MAX_SIGNAL_LISTENERS = 10_000;

/**
 * Files a scan may have in progress before it waits (Coordinator.room): a few KB each, so a few
 * MB in all, and far more than the pipeline works on at once (its in-flight limit).
 */
const MAX_FILES_IN_PROGRESS = 2_000;
/**
 * Files between settled and done at once: enough hashed and checked ahead that every upload slot
 * is refilled at once, and checks gather in batches.
 */
export function filesInFlight(uploadConcurrency: number): number {
  return Math.max(16, uploadConcurrency * 8);
}
/** The `retry` command leaves this file in STATE_DIRECTORY for a running daemon to find. */
export const RETRY_REQUEST_FILE = 'retry-request';
/** How often a running daemon looks for a retry request. */
const RETRY_REQUEST_POLL_MS = 2_000;
/**
 * How often a running daemon reads the mount table (a few KB) for cards mounted into its folders.
 * A card taken out and another put in between two readings may get the same mount ID, and look
 * like no change at all (the rescan then finds its photos): a second is shorter than a swap.
 */
const MOUNT_TABLE_INTERVAL_MS = 1_000;
/**
 * How long `once` waits for a server that stopped answering, or that fails every upload, during
 * its run: an Immich restarting for an update is back within it, and a cron job's next run does
 * not find this one still waiting. The files left then stay for the next run (exit 1).
 */
const ONCE_PATIENCE_MS = 2 * 60_000;

/**
 * The composition root: builds the parts, connects, runs until done (once) or stopped (watch),
 * and closes everything in reverse order. Resolves with the run's counts; rejects only with
 * what should end the process with an error (refused key, missing permission, server never
 * reached in `once` mode).
 */
export async function runUploader(options: RunOptions): Promise<StatsSnapshot> {
  const { config, logger } = options;
  // One process writes the journal: a second instance on the same STATE_DIRECTORY stops here.
  const lock = acquireLock(config.stateDirectory);
  const problems = new Problems({ clock: options.clock ?? systemClock, directory: config.stateDirectory });
  try {
    const journal = Journal.open({ directory: config.stateDirectory, logger: logger.child({ stage: 'journal' }), clock: options.clock });
    try {
      const client = options.client ?? createImmichClient({ apiUrl: config.apiUrl, apiKey: config.apiKey });
      try {
        return await run(options, journal, client, problems);
      } finally {
        client.close();
      }
    } finally {
      journal.close();
    }
  } finally {
    problems.close();
    lock.release();
  }
}

async function run(options: RunOptions, journal: Journal, client: ImmichClient, problems: Problems): Promise<StatsSnapshot> {
  const { config, mode, logger, stop } = options;
  const clock = options.clock ?? systemClock;
  const fatal = new AbortController();
  // `once` stops as at a signal once it gave up waiting for the server (ONCE_PATIENCE_MS).
  const gaveUp = new AbortController();
  const stopWaiting = AbortSignal.any([stop, fatal.signal, gaveUp.signal]);
  const abortRequests = new AbortController();
  const requestSignal = AbortSignal.any([abortRequests.signal, fatal.signal, ...(options.abortNow ? [options.abortNow] : [])]);
  // Every waiting hash or upload listens on these signals (until it starts): a few hundred
  // listeners are expected, not a leak.
  setMaxListeners(MAX_SIGNAL_LISTENERS, stopWaiting, requestSignal);
  const patience: { patience?: Patience } =
    mode === 'once'
      ? {
          patience: {
            giveUpAfterMs: options.oncePatienceMs ?? ONCE_PATIENCE_MS,
            onGiveUp: (reason) => {
              logger.warn({ reason }, `${reason}: stopping; the files not done stay for the next run`);
              gaveUp.abort();
            },
          },
        }
      : {};
  // The server's major version decides the upload fields. Immich may come back from a restart
  // upgraded, or rolled back: v3 ignores v2's fields, but v2 refuses uploads without them.
  // Major 0 until connected.
  const serverNow = { major: 0, text: '' };
  const readVersionAgain = async (): Promise<void> => {
    try {
      const version = await client.serverVersion(stopWaiting);
      if (versionText(version) === serverNow.text) return;
      Object.assign(serverNow, { major: version.major, text: versionText(version) });
      logger.info({ server: serverNow.text }, `the Immich server is now ${serverNow.text}`);
    } catch {
      // Asked again the next time it comes back; meanwhile the fields stay as they were.
    }
  };
  const gate = new ServerGate({
    client,
    clock,
    logger: logger.child({ stage: 'server' }),
    signal: stopWaiting,
    problems,
    ...patience,
    // Not while connecting, which reads the version itself.
    onAnswersAgain: () => (serverNow.major > 0 ? readVersionAgain() : Promise.resolve()),
  });
  // Write-ahead states wait for their commit (shared with those recorded in the same moment);
  // the rest commit in the next batch.
  const record: Recorder = makeRecorder(
    (file, state, details) => journal.recordWriteAhead(file, state, details),
    (file, state, details) => journal.recordLater(file, state, details),
  );
  // The pipeline's own transitions are traced (the crash test counts them to choose its kills).
  const traced: Recorder = makeRecorder(
    (file, state, details) => {
      logger.trace({ file: file.path, state }, 'state');
      return record(file, state, details);
    },
    (file, state, details) => {
      logger.trace({ file: file.path, state }, 'state');
      record(file, state, details);
    },
  );
  let fatalError: Error | undefined;

  const server = await connect({
    client,
    gate,
    logger,
    mode,
    clock,
    problems,
    signal: stopWaiting,
    gaveUp: gaveUp.signal,
    patienceMs: options.oncePatienceMs ?? ONCE_PATIENCE_MS,
  });
  if (!server) return emptySnapshot();
  Object.assign(serverNow, { major: server.major, text: versionText(server) });

  const disks = await disksMounted(options, clock, logger, problems, stopWaiting);
  if (!disks) return emptySnapshot();
  // Whether the disk that holds the archive (move mode) is still mounted, where there is a mount table.
  let archiveMount: ArchiveMount | undefined;
  // Temporaries of cross-device copies are looked for only when a run may have left some.
  const temporaries = config.afterUpload === 'move' ? new ArchiveTemporaries(config.stateDirectory, config.archiveDirectory) : undefined;
  if (temporaries) {
    try {
      makeFoldersSync(config.archiveDirectory);
      // Found only after each upload otherwise: every file on the server, none archived.
      accessSync(config.archiveDirectory, constants.W_OK);
    } catch (error) {
      throw new StartError(`Cannot use ARCHIVE_DIRECTORY ${config.archiveDirectory}: ${messageOf(error)}. Fix: make it a folder this user can write, or set ARCHIVE_DIRECTORY to one`);
    }
    const table = await readMountTable(options.system?.mountTable);
    if (table !== undefined) archiveMount = new ArchiveMount(config.archiveDirectory, rememberDisk(config.stateDirectory, config.archiveDirectory, table));
    const leftovers = await temporaries.removeLeftovers();
    if (leftovers) logger.info({ count: leftovers }, 'removed temporary files left by an interrupted archive copy');
  }
  // The file-system thread takes the small calls of small files, where they are most of the
  // cost; large files keep the thread pool. It starts at its first request (so a run of large
  // files alone does not pay its memory) and, idle, does not keep the process alive.
  const files = new FsWorker();
  // A second thread hashes large files (a 1 GiB hash takes about a second): the main thread
  // uploads meanwhile, and the first thread's small calls never wait behind a hash.
  const hashing = new FsWorker();
  // In move mode (where there are temporaries), the archive folder made above is never made again.
  const tracked = (fs: ArchiveFs): ArchiveFs =>
    temporaries ? keepingArchiveDirectory(temporaries.track(fs), config.archiveDirectory, () => archiveMount?.gone, () => archiveMount?.device) : fs;
  const smallArchiveFs = tracked(options.archiveFs ?? threadedArchiveFs(files));
  const archiveFs = tracked(options.archiveFs ?? nodeArchiveFs);
  const threadedStat = settleStatFrom((path) => files.lstat(path));
  const isSmall = (size: number): boolean => size <= WHOLE_FILE_MAX_BYTES;
  await recoverUnfinished({
    // A confirmed file's sidecar is in its `on-server` transition: delete mode removes that version.
    rows: journal.unfinished().map((row) => (row.state === 'on-server' || row.state === 'deleting' ? { ...row, sidecar: sentSidecarOf(journal.transitions(row.id)) } : row)),
    roots: config.watchRoots,
    afterUpload: config.afterUpload,
    record,
    logger,
    archiveFs,
  });
  const vanished = await forgetVanishedFailures(journal.failed(), record);
  if (vanished > 0) logger.info({ vanished }, `${vanished} failed file(s) are no longer there: no longer counted as failed`);

  const immich = new ResilientImmich({ client, gate, clock, logger: logger.child({ stage: 'upload' }), problems, ...patience });
  const signals = { wait: stopWaiting, request: requestSignal };
  const checker = new CheckBatcher({ send: (items) => immich.bulkUploadCheck(items, signals), clock });
  // Hashing is bound by disk and one core per file; two at a time keeps both cores busy
  // without making a spinning disk seek between many files.
  const limitHash = limitWhileWaiting(new PQueue({ concurrency: Math.min(2, config.uploadConcurrency) }), stopWaiting);
  const limitUpload = limitWhileWaiting(new PQueue({ concurrency: config.uploadConcurrency }), stopWaiting);
  // Sub-folders the uploader empties, removed once they stayed empty (REMOVE_EMPTY_FOLDERS).
  const emptyFolders = config.removeEmptyFolders
    ? new EmptyFolders({ clock, logger: logger.child({ stage: 'archive' }), graceMs: config.fileStabilityWaitMs })
    : undefined;
  // Those that waited when the uploader last stopped wait again.
  for (const { folder, root } of emptyFolders ? readWaitingFolders(config.stateDirectory, config.watchRoots) : []) emptyFolders?.noteFolder(folder, root);
  // A sidecar that arrives after its photo went: moved after it, or warned about (keep mode
  // leaves every file where it is, and so has nothing to do).
  const lateSidecars =
    config.afterUpload === 'keep'
      ? undefined
      : new LateSidecars({
          clock,
          logger: logger.child({ stage: 'sidecar' }),
          waitMs: config.fileStabilityWaitMs,
          intervalMs: config.fileStabilityCheckIntervalMs,
          afterUpload: config.afterUpload,
          rowsWithStem: (stem) => journal.latestWithStem(stem),
          fs: archiveFs,
          archiveDirectory: config.archiveDirectory,
          display: (file) => relative(file.root.path, file.path),
          onMoved: (file) => emptyFolders?.note(file.path, file.root),
        });
  // A writer that comes back after its file was uploaded: the complete file goes round again.
  const lateWrites = new LateWrites({
    clock,
    logger: logger.child({ stage: 'archive' }),
    waitMs: config.fileStabilityWaitMs,
    intervalMs: config.fileStabilityCheckIntervalMs,
    fs: archiveFs,
    display: (file) => relative(file.root.path, file.path),
  });
  const originalGone = (file: Candidate): void => {
    lateSidecars?.photoGone(file.path);
    emptyFolders?.note(file.path, file.root);
  };
  const archiveFull = new ArchiveFull({ problems, logger, archiveDirectory: config.archiveDirectory });
  const coordinator: Coordinator = new Coordinator({
    clock,
    logger,
    waitMs: config.fileStabilityWaitMs,
    intervalMs: config.fileStabilityCheckIntervalMs,
    stat: (path, sizeSeen) => (isSmall(sizeSeen) ? threadedStat(path, sizeSeen) : lstatForSettle(path, sizeSeen)),
    inFlight: filesInFlight(config.uploadConcurrency),
    maxInProgress: MAX_FILES_IN_PROGRESS,
    retryFailed: mode === 'watch',
    record,
    isDone: (candidate) => isDone(journal, candidate, config.afterUpload),
    writable: (folder) => archiveFs.writable(folder).then(
      () => true,
      () => false,
    ),
    process: async (file) => {
      // Seen while it was being written, it grew past the limit since (the detector looks at files it lists).
      if (file.size > config.maxFileSizeBytes) return { kind: 'skipped', reason: tooLarge(file.size, config.maxFileSizeBytes) };
      // While the archive's disk is gone, nothing is uploaded: the files wait in the watch folder.
      if (archiveMount?.gone !== undefined) {
        logger.debug({ file: file.path }, "waiting for the archive's disk");
        if (!(await archiveMount.whenThere(stopWaiting))) return { kind: 'aborted' };
      }
      const outcome = await processFile(file, {
        immich,
        checker,
        serverMajor: () => serverNow.major,
        clock,
        files,
        hashing,
        limitHash: async (work, leaveOn) => {
          const result = await limitHash(work, leaveOn);
          coordinator.stats.hashed++;
          return result;
        },
        limitUpload,
        afterUpload: config.afterUpload,
        archiveFs: isSmall(file.size) ? smallArchiveFs : archiveFs,
        lateWrites,
        record: traced,
        signals,
        sidecarSentBefore: (settled, assetId) => sidecarSentTo(assetId, journal.versionTransitions(settled.path, settled.size, settled.mtimeMs)),
      });
      archiveFull.saw(outcome);
      return outcome;
    },
    onFatal: (error) => {
      fatalError ??= error instanceof Error ? error : new Error(String(error));
      fatal.abort(error);
    },
    onOriginalGone: originalGone,
  });
  options.onCounts?.(() => coordinator.stats.snapshot(coordinator.queued));
  const detector = new Detector({
    roots: config.watchRoots,
    recursive: config.watchRecursive,
    // `once` looks at what is there now: one scan, no watching.
    polling: mode === 'once' || config.watchPolling,
    pollIntervalMs: mode === 'once' ? Number.MAX_SAFE_INTEGER : config.watchPollIntervalMs,
    rescanIntervalMs: mode === 'once' ? Number.MAX_SAFE_INTEGER : config.rescanIntervalMs,
    excludedPaths: config.excludedPaths,
    missingAtStart: disks.watchFoldersMissing,
    supportedExtensions: config.supportedExtensions,
    maxFileSizeBytes: config.maxFileSizeBytes,
    clock,
    logger: logger.child({ stage: 'detect' }),
    onCandidate: (candidate) => coordinator.offer(candidate),
    onSidecar: lateSidecars && ((candidate) => lateSidecars.offer(candidate)),
    onTemporary: (path, root) => lateWrites.leftover(path, root),
    room: (signal) => coordinator.room(signal),
  });

  coordinator.start();
  lateSidecars?.start();
  // `once` looks at the files it took care of when it ends, which sees any change since as well.
  if (mode === 'watch') lateWrites.start();
  emptyFolders?.start();
  const background = new AbortController();
  let mounts: MountTable | undefined;
  try {
    if (mode === 'watch') {
      // Started before the initial scan, which on a first run over a large backlog lasts until
      // most of it is uploaded (the scan waits for room in the pipeline).
      void logSummaries(coordinator, logger, clock, background.signal);
      void watchRetryRequests(config.stateDirectory, journal, coordinator, logger, clock, background.signal);
      void lookForMissingWatchFolders(detector, clock, background.signal);
      // A card mounted into a watch folder brings no file event; nor does the archive's disk
      // when it is back, which files may be waiting for.
      mounts = await MountTable.follow({
        read: () => readMountTable(options.system?.mountTable),
        clock,
        intervalMs: MOUNT_TABLE_INTERVAL_MS,
        onChange: (points, mountinfo) => {
          logger.debug({ points }, 'mounts changed');
          detector.mountsChanged(points);
          if (archiveMount) followArchiveMount(archiveMount, mountinfo, coordinator, logger, problems);
        },
      });
      // The archive's disk may have gone between its check at start and the first reading.
      if (mounts && archiveMount) followArchiveMount(archiveMount, mounts.text, coordinator, logger, problems);
      if (mounts && !config.watchPolling) warnOfNetworkShares(config, mounts.text, logger);
    }
    await detector.start();
    coordinator.initialScanDone();
    if (mode === 'watch') {
      logger.info(
        { folders: config.watchRoots.map((root) => root.path), polling: config.watchPolling, afterUpload: config.afterUpload },
        `watching ${config.watchRoots.length} folder(s); ${describeAfterUpload(config)}`,
      );
      await untilAborted(stopWaiting);
    } else {
      const done = async (): Promise<void> => {
        // A photo that goes wakes the sidecars that waited for it: done when both are idle at once.
        do await Promise.all([coordinator.whenIdle(), lateSidecars?.whenIdle()]);
        while (coordinator.queued > 0 || (lateSidecars?.pending ?? 0) > 0);
        await emptyFolders?.whenIdle();
      };
      await raceAbort(done(), stopWaiting).catch(() => undefined);
    }
  } finally {
    background.abort();
    await mounts?.close();
    await detector.close();
    await shutdown(coordinator, abortRequests, stop.aborted ? config.shutdownGraceMs : 0, clock, logger);
    await lateSidecars?.close();
    await lateWrites.close();
    await emptyFolders?.close();
    if (emptyFolders) saveWaitingFolders(config.stateDirectory, emptyFolders.waiting());
    await Promise.all([files.close(), hashing.close()]);
    temporaries?.finish();
  }
  if (fatalError !== undefined) throw fatalError;
  const unreadable = detector.unreadableFolders;
  const snapshot = { ...coordinator.stats.snapshot(coordinator.queued), ...(unreadable > 0 ? { unreadable } : {}) };
  logger.info(snapshot, `summary: ${formatSummary(snapshot)}`);
  return snapshot;
}

function describeAfterUpload(config: RunOptions['config']): string {
  switch (config.afterUpload) {
    case 'move':
      return `uploaded originals move to ${config.archiveDirectory}`;
    case 'delete':
      return 'uploaded originals are deleted';
    case 'keep':
      return 'uploaded originals stay in place';
  }
}

/**
 * A file version the journal already saw through needs no work: no hash, no server call. That
 * is what makes `keep` mode cheap after a restart. Failed files are tried again after a restart,
 * and so are files skipped as too large (the scan lists only those under the limit now: it was
 * raised); an empty file stays skipped.
 */
function isDone(journal: Journal, candidate: Candidate, afterUpload: RunOptions['config']['afterUpload']): boolean {
  const row = journal.findFinal(candidate.path, candidate.size, candidate.mtimeMs);
  if (!row) return false;
  return (row.state === 'skipped' && candidate.size === 0) || (row.state === 'kept' && afterUpload === 'keep');
}

/** Picks up the `retry` command's request while running: failed files are tried again now. */
async function watchRetryRequests(
  stateDirectory: string,
  journal: Journal,
  coordinator: Coordinator,
  logger: Logger,
  clock: Clock,
  signal: AbortSignal,
): Promise<void> {
  const request = join(stateDirectory, RETRY_REQUEST_FILE);
  try {
    for (;;) {
      await clock.sleep(RETRY_REQUEST_POLL_MS, signal);
      const found = await stat(request).then(
        () => true,
        () => false,
      );
      if (!found) continue;
      await rm(request, { force: true });
      journal.makeFailedEligible();
      const count = coordinator.retryFailedNow();
      logger.info({ count }, `retry requested: trying ${count} failed file(s) again`);
    }
  } catch {
    // Aborted at shutdown.
  }
}

/** Every second, until `signal` aborts: a missing watch folder that is there again is walked (detect.ts). Never rejects. */
async function lookForMissingWatchFolders(detector: Detector, clock: Clock, signal: AbortSignal): Promise<void> {
  for (;;) {
    try {
      await clock.sleep(MOUNT_TABLE_INTERVAL_MS, signal);
    } catch {
      return; // stopped
    }
    await detector.lookForMissingRoots();
  }
}

/**
 * Whether the disks of the watch folders and the archive are mounted, for those that /etc/fstab
 * mounts (a USB disk with `nofail`, still being mounted when the uploader starts) or that were
 * noted at an earlier start (disks.ts), and notes those of the watch folders. A watch folder
 * there would be missing, or empty on the disk beneath; the archive would be made on the disk
 * beneath, and the originals moved there hidden once the disk is mounted. `once` stops with an
 * error. `watch` warns of a watch folder (the detector lists it once its disk is mounted) and
 * waits for the archive's disk. Resolves the watch folders missing for that reason, or undefined
 * when stopped while waiting.
 */
async function disksMounted(
  options: RunOptions,
  clock: Clock,
  logger: Logger,
  problems: Problems,
  signal: AbortSignal,
): Promise<{ watchFoldersMissing: string[] } | undefined> {
  const { config, mode } = options;
  const [unmounted, table] = await Promise.all([readAwayDisks(options.system ?? {}, config.stateDirectory), readMountTable(options.system?.mountTable)]);
  const watchFoldersMissing: string[] = [];
  for (const root of config.watchRoots) {
    const away = unmounted(root.path);
    const missing = await stat(root.path).then(
      () => false,
      () => true,
    );
    if (away === undefined) {
      // Noted for the next start, which may find the disk not mounted yet.
      if (table !== undefined && !missing) rememberDisk(config.stateDirectory, root.path, table);
      continue;
    }
    const error = notMountedError('WATCH_DIRECTORIES', root.path, away, config.stateDirectory);
    if (mode === 'once') throw error;
    logger.warn({ folder: root.path, mountPoint: away.point }, `${error.situation}: its files are uploaded once it is mounted`);
    // Reported here: the detector need not say again that it is missing (not on the disk beneath).
    if (missing) watchFoldersMissing.push(root.path);
  }
  if (config.afterUpload !== 'move') return { watchFoldersMissing };
  const archive = config.archiveDirectory;
  const away = await archiveDiskAway(config.stateDirectory, archive, options.system);
  if (away === undefined) return { watchFoldersMissing };
  if (mode === 'once') throw away;
  problems.raise('archive-disk', away.waiting);
  logger.warn({ archive }, away.waiting);
  try {
    do await clock.sleep(MOUNT_TABLE_INTERVAL_MS, signal);
    while ((await archiveDiskAway(config.stateDirectory, archive, options.system)) !== undefined);
  } catch {
    return undefined; // stopped
  }
  problems.clear('archive-disk');
  logger.info({ archive }, `ARCHIVE_DIRECTORY ${archive} is available: going on`);
  return { watchFoldersMissing };
}

/**
 * Warns once at start of each watch folder on a network share: what other machines put there
 * brings no file event here, and only the rescans would find it.
 */
function warnOfNetworkShares(config: Config, mountTable: string, logger: Logger): void {
  for (const root of config.watchRoots) {
    const type = networkFileSystemOf(mountTable, root.path);
    if (type === undefined) continue;
    const advice = networkShareAdvice(type, config.rescanIntervalMs, config.watchPollIntervalMs);
    logger.warn({ folder: root.path, fileSystem: type }, `Watch folder ${root.path} is ${advice}`);
  }
}

/**
 * After the mounts changed: the archive's disk gone is warned about (nothing is archived while it
 * is away); back, the files whose archive failed meanwhile go on now instead of at their next
 * try (up to an hour away).
 */
function followArchiveMount(archiveMount: ArchiveMount, mountinfo: string, coordinator: Coordinator, logger: Logger, problems: Problems): void {
  switch (archiveMount.update(mountinfo)) {
    case 'gone': {
      const message = archiveMount.gone ?? "the archive's disk is gone";
      problems.raise('archive-disk', message);
      logger.warn(message);
      return;
    }
    case 'back': {
      problems.clear('archive-disk');
      const count = coordinator.retryWaitingNow('archive');
      logger.info({ count }, `the archive's disk is mounted again${count > 0 ? `: trying the ${count} file(s) waiting for it now` : ''}`);
      return;
    }
    case undefined:
      return;
  }
}

/**
 * Reads the server's version (which decides the upload fields) and checks the key. A server that
 * is not up yet (no answer, a proxy's 502-504) is waited for at the gate, as when Immich and the
 * uploader start together: `watch` waits for good, `once` as long as its patience. A 404 is tried
 * again for `patienceMs` in both modes. Resolves undefined when stopped while waiting.
 */
async function connect(deps: {
  client: ImmichClient;
  gate: ServerGate;
  logger: Logger;
  mode: RunMode;
  clock: Clock;
  signal: AbortSignal;
  /** Aborted when `once` gave up waiting for the server (part of `signal`). */
  gaveUp: AbortSignal;
  /** How long a 404 (either mode) and the server's own errors (`once`) are tried again. */
  patienceMs: number;
  problems: Problems;
}): Promise<ServerVersion | undefined> {
  const { client, gate, logger, mode, clock, signal, gaveUp, patienceMs, problems } = deps;
  const started = clock.monotonic();
  let warned = false;
  try {
    return await retry(
      async () => {
        const version = await client.serverVersion(signal);
        if (version.major < MIN_SERVER_MAJOR) throw new ServerTooOldError(version);
        const key = await client.apiKeyInfo(signal);
        const granted = key.permissions.includes('all') || key.permissions.includes('asset.upload');
        if (!granted) throw new MissingPermissionError(key.name, 'asset.upload');
        problems.clear('server');
        logger.info({ server: versionText(version), key: key.name }, `connected to Immich ${versionText(version)} with the key "${key.name}"`);
        return version;
      },
      {
        policy: { maxAttempts: Number.POSITIVE_INFINITY, baseDelayMs: 1_000, maxDelayMs: 30_000 },
        clock,
        signal,
        classify: async (error) => {
          if (!isImmichError(error)) return { retry: false };
          const outOfPatience = clock.monotonic() - started > patienceMs;
          if (error.status === 404) {
            // A proxy answers 404 while Immich's container is made anew (Traefik), and so does an
            // address that leads elsewhere: tried again for a while, not for good. Answering
            // pings, it is Immich's own 404 (another path): final at once.
            const pings = await client.ping(signal).then(
              () => true,
              () => false,
            );
            if (pings || outOfPatience) return { retry: false };
          } else if (mayBeDown(error)) {
            // The gate says it once, however long it takes (`once`: its patience).
            if (await gate.waitUntilUp(signal)) return { retry: true, free: true };
          } else if (!error.retryable || (mode === 'once' && outOfPatience)) {
            return { retry: false };
          }
          const message = `cannot reach the Immich server yet (${error.message}); trying again`;
          problems.raise('server', message);
          // Said once; the last try's failure is the run's error.
          if (warned) logger.debug({ reason: error.message }, message);
          else logger.warn({ reason: error.message }, message);
          warned = true;
          return { retry: true, atLeastMs: error.details.retryAfterMs };
        },
      },
    );
  } catch (error) {
    // Nothing was done: the exit code of `once` must say so.
    if (gaveUp.aborted) throw new StartError('gave up waiting for the Immich server: nothing was uploaded, the next run tries again');
    if (signal.aborted && !(error instanceof ImmichError && error.kind === 'auth')) return undefined;
    throw error;
  }
}

function versionText(version: ServerVersion): string {
  return `${version.major}.${version.minor}.${version.patch}`;
}

/** Waits for in-flight files up to the grace period, then aborts what is still running. */
async function shutdown(
  coordinator: Coordinator,
  abortRequests: AbortController,
  graceMs: number,
  clock: Clock,
  logger: Logger,
): Promise<void> {
  const stopped = coordinator.stop();
  const grace = new AbortController();
  const inTime = await Promise.race([
    stopped.then(() => true),
    clock.sleep(graceMs, grace.signal).then(
      () => false,
      () => true,
    ),
  ]);
  grace.abort();
  if (!inTime) {
    if (coordinator.queued > 0) logger.warn({ graceMs }, 'grace period over: aborting uploads still running; their files stay in place');
    abortRequests.abort();
    await stopped;
  }
}

async function logSummaries(coordinator: Coordinator, logger: Logger, clock: Clock, signal: AbortSignal): Promise<void> {
  try {
    for (;;) {
      await clock.sleep(SUMMARY_INTERVAL_MS, signal);
      if (coordinator.stats.changedSinceLastReport(coordinator.queued)) {
        const snapshot = coordinator.stats.snapshot(coordinator.queued);
        logger.info(snapshot, `so far: ${formatSummary(snapshot)}`);
      }
    }
  } catch {
    // Aborted at shutdown: the final summary follows.
  }
}

function untilAborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
}

function emptySnapshot(): StatsSnapshot {
  return new RunStats().snapshot(0);
}
