import { setMaxListeners } from 'node:events';
import { lstat } from 'node:fs/promises';
import { dirname, relative } from 'node:path';
import PQueue from 'p-queue';
import type { Logger } from 'pino';
import type { Clock } from '../support/clock.js';
import { Waiters } from '../support/waiters.js';
import { describeDisposition, type Disposition } from './after-upload.js';
import { incompleteUploadAdvice } from './late-writes.js';
import type { FailedStage, FileOutcome } from './process-file.js';
import type { Recorder } from './states.js';
import { Settler, type SettleStatFunction } from './settle.js';
import { formatBytes, RunStats } from './stats.js';
import type { Candidate, SettledFile } from './types.js';

/** `left`: uploaded, and its original left in place, as its folder cannot be written to. */
type EntryState = 'settling' | 'queued' | 'active' | 'skipped' | 'failed' | 'left';

interface Entry {
  /** The file and the version (size, mtime) being worked on. */
  file: Candidate;
  state: EntryState;
  /** For failed files: when they may be tried again, in `clock.monotonic()` time (Infinity: only once they change). */
  retryAt?: number;
  failures?: number;
  /** For failed files: the step that failed, and why. */
  failedAt?: FailedStage;
  failedWith?: string;
  /** Another version was seen while this one was queued or processed: looked at once it is done. */
  newerSeen?: boolean;
}

/** Immich takes a sidecar only with a new upload: what an edited one holds is in the archive only. */
const SIDECAR_ARCHIVED_UNSENT = '; its sidecar did not go to Immich, which had the photo already';

/** First wait before a failed file is tried again; it doubles per failure, up to an hour. */
const RETRY_BASE_MS = 60_000;
const RETRY_MAX_MS = 60 * 60_000;
/**
 * Tries of a file whose upload fails (Immich answers an error for that file alone: the others
 * go through, see UploadBreaker) before it waits for a change, a restart or `retry`: about a day.
 * Each try sends the whole file again, up to ten times.
 */
const MAX_UPLOAD_TRIES = 30;
/**
 * How early a retry's timer may fire and still count as due: a timer counts from the event
 * loop's cached time, and fires up to a millisecond before `clock.monotonic()` reaches its end.
 * Without it, one retry in ten was dropped until the next rescan (minutes to hours).
 */
const TIMER_SLACK_MS = 10;
/**
 * How often, at most, a folder whose originals were left in place is looked at again: once per
 * rescan in practice (every file of the folder is seen again then, within a moment).
 */
const UNWRITABLE_LOOK_MS = 1_000;

/**
 * Takes the detector's candidates and sees each file version through the pipeline once:
 * however many events a file produces, it is settled, processed and logged once. Keeps the
 * counts, retries failed files later in watch mode, and knows when all work is done.
 */
export class Coordinator {
  readonly stats = new RunStats();
  private readonly entries = new Map<string, Entry>();
  private readonly settler: Settler;
  private readonly queue: PQueue;
  private inProgress = 0;
  private readonly idleWaiters = new Waiters();
  /** Scans waiting for fewer files in progress (see room()). */
  private readonly roomWaiters = new Waiters();
  private readonly retryTimers = new AbortController();
  private stopped = false;
  /** Unchanged files are counted in the first pass only: every rescan sees them again. */
  private countingUnchanged = true;
  /** Folders whose originals were left in place (not writable): their name in logs, and when each was last looked at. */
  private readonly unwritable = new Map<string, { shown: string; lookedAt: number }>();

  constructor(
    private readonly deps: {
      clock: Clock;
      logger: Logger;
      waitMs: number;
      intervalMs: number;
      /** How the settler looks at a file (default: fs lstat). */
      stat?: SettleStatFunction;
      /** How many files may be between settled and done at once. */
      inFlight: number;
      /**
       * How many files a scan may have in progress (settling, queued or being processed) before it
       * waits for room: a first run over 100,000 new files would otherwise hold them all in memory.
       */
      maxInProgress: number;
      /** Whether failed files are tried again later in this run (watch) or not (once). */
      retryFailed: boolean;
      /** Tries of a file failing at its upload before it waits for a change (default MAX_UPLOAD_TRIES). */
      maxUploadTries?: number;
      process: (file: SettledFile) => Promise<FileOutcome>;
      /** Persists the transitions the coordinator decides (discovered, skipped, failed, gone). */
      record: Recorder;
      /**
       * Whether this exact version is already done and needs no work at all (keep mode: the
       * journal knows it), checked before anything else.
       */
      isDone?: (candidate: Candidate) => boolean;
      /** Called with an error that must end the run (the server refused the key). */
      onFatal: (error: unknown) => void;
      /** Called when a file's original left the watch folder (moved into the archive, or deleted). */
      onOriginalGone?: (file: Candidate) => void;
      /** Whether a folder may be written to now: its originals left in place then go on (see leave). */
      writable?: (folder: string) => Promise<boolean>;
    },
  ) {
    // Each failed file waiting for its retry listens on it: as many as failed at once (a full
    // disk, a server that refuses them all), which is no leak. Past ten, Node would warn of one.
    setMaxListeners(0, this.retryTimers.signal);
    this.queue = new PQueue({ concurrency: deps.inFlight });
    this.settler = new Settler({
      clock: deps.clock,
      waitMs: deps.waitMs,
      intervalMs: deps.intervalMs,
      stat: deps.stat,
      onSettled: (file) => this.enqueue(file),
      onEmpty: (candidate) => this.skipEmpty(candidate),
      onGone: (path) => this.vanished(path),
    });
  }

  start(): void {
    this.settler.start();
  }

  /** A file the detector saw. Cheap and idempotent: repeated sightings of one version do nothing. */
  offer(candidate: Candidate): void {
    if (this.stopped) return;
    const entry = this.entries.get(candidate.path);
    if (!entry && this.deps.isDone?.(candidate)) {
      if (this.countingUnchanged) this.stats.unchanged++;
      return;
    }
    if (entry) {
      const sameVersion = entry.file.size === candidate.size && entry.file.mtimeMs === candidate.mtimeMs;
      switch (entry.state) {
        case 'settling':
          // The settler watches the file itself; a new version only restarts its window.
          entry.file = candidate;
          this.settler.add(candidate);
          return;
        case 'queued':
        case 'active':
          // Checked again before archiving: a change sends the file round once it is done. A new
          // file put at its path just before the original's removal is left alone by the archive,
          // and looked at once this one is done (forget).
          if (!sameVersion) entry.newerSeen = true;
          return;
        case 'skipped':
        case 'failed':
          if (sameVersion && (entry.retryAt ?? Number.POSITIVE_INFINITY) > this.deps.clock.monotonic() + TIMER_SLACK_MS) return;
          break;
        case 'left':
          if (!sameVersion) break;
          this.lookAgainAt(dirname(candidate.path));
          return;
      }
    }
    this.track(candidate, entry);
  }

  /** The initial scan is over: later sightings of unchanged files are not news. */
  initialScanDone(): void {
    this.countingUnchanged = false;
  }

  /** Makes every failed file eligible now (the `retry` command), whatever its retry time. */
  retryFailedNow(): number {
    return this.retryNow(() => true);
  }

  /**
   * Makes the files that failed at `stage` and wait for a retry eligible now, not those refused
   * for good: what they waited for is back (the archive's disk). Returns how many.
   */
  retryWaitingNow(stage: FailedStage): number {
    return this.retryNow((entry) => entry.failedAt === stage && Number.isFinite(entry.retryAt));
  }

  /** Settling, queued or being processed. */
  get queued(): number {
    return this.inProgress;
  }

  /**
   * Resolves when fewer than `maxInProgress` files are in progress, when the coordinator stops,
   * or when `signal` aborts. A scan waits on it before each file it offers; events do not, so a
   * new file is never kept waiting behind an old backlog's scan.
   */
  async room(signal: AbortSignal): Promise<void> {
    while (this.inProgress >= this.deps.maxInProgress && !this.stopped && !signal.aborted) {
      await new Promise<void>((resolve) => {
        const wake = (): void => {
          signal.removeEventListener('abort', wake);
          resolve();
        };
        signal.addEventListener('abort', wake);
        this.roomWaiters.add(wake);
      });
    }
  }

  /** Resolves when no file is settling, queued or being processed. */
  async whenIdle(): Promise<void> {
    while (this.inProgress > 0) await this.idleWaiters.next();
  }

  /**
   * Stops taking files, drops those still settling or queued (they stay where they are), and
   * waits for the ones being processed; the caller aborts them when its grace period ends.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    this.roomWaiters.wakeAll();
    this.retryTimers.abort();
    await this.settler.close();
    this.queue.clear();
    await this.queue.onIdle();
  }

  private enqueue(file: SettledFile): void {
    const entry = this.entries.get(file.path);
    if (!entry || this.stopped) return;
    entry.state = 'queued';
    entry.file = file;
    // run() never rejects: it turns every failure into an outcome or a fatal stop.
    void this.queue.add(() => this.run(file));
  }

  private async run(file: SettledFile): Promise<void> {
    const entry = this.entries.get(file.path);
    if (!entry || this.stopped) return;
    entry.state = 'active';
    try {
      const outcome = await this.deps.process(file);
      await this.settle(file, outcome);
    } catch (error) {
      this.deps.onFatal(error);
    }
  }

  /** A sidecar that did not go with its photo, or could not follow it into the archive: worth a warning. */
  private warnSidecars(file: string, disposition: Disposition, notSent?: string): void {
    if (notSent !== undefined) this.deps.logger.warn({ file, sidecarNotSent: notSent }, `the sidecar of ${file}: ${notSent}`);
    if (disposition.mode !== 'move' || disposition.sidecarsLeft === undefined) return;
    this.deps.logger.warn({ file, sidecarsLeft: disposition.sidecarsLeft }, `a sidecar of ${file} stays in the watch folder: ${disposition.sidecarsLeft}`);
  }

  private originalGone(file: Candidate, disposition: Disposition): void {
    if (disposition.mode === 'move' || disposition.mode === 'delete') this.deps.onOriginalGone?.(file);
  }

  private async settle(file: SettledFile, outcome: FileOutcome): Promise<void> {
    const { logger, clock } = this.deps;
    const fields = { file: this.display(file), bytes: file.size };
    switch (outcome.kind) {
      case 'uploaded':
        this.stats.uploaded++;
        this.stats.uploadedBytes += file.size;
        logger.info(
          { ...fields, ms: outcome.ms, assetId: outcome.assetId, ...dispositionFields(outcome.disposition) },
          `uploaded ${fields.file} (${formatBytes(file.size)} in ${outcome.ms} ms)${describeDisposition(outcome.disposition)}`,
        );
        if (outcome.completes !== undefined) {
          logger.warn(
            { ...fields, assetId: outcome.completes },
            `${fields.file} was written again from its start after it was uploaded: its complete version is uploaded now. ${incompleteUploadAdvice(outcome.completes, this.deps.waitMs)}`,
          );
        }
        this.warnSidecars(fields.file, outcome.disposition, outcome.sidecarNotSent);
        this.originalGone(file, outcome.disposition);
        this.finish(file, outcome.disposition);
        return;
      case 'already-on-server': {
        this.stats.duplicates++;
        // A copy only in the trash goes when Immich empties it: worth a warning.
        const where = outcome.inTrash ? 'already on server, but only in its trash, which Immich empties after a while (restore it there to keep it)' : 'already on server';
        logger[outcome.inTrash ? 'warn' : 'info'](
          { ...fields, ms: outcome.ms, assetId: outcome.assetId, ...(outcome.inTrash ? { inTrash: true } : {}), ...dispositionFields(outcome.disposition) },
          `${where}: ${fields.file}${describeDisposition(outcome.disposition)}${outcome.sidecarNotSent && outcome.disposition.mode === 'move' ? SIDECAR_ARCHIVED_UNSENT : ''}`,
        );
        this.warnSidecars(fields.file, outcome.disposition);
        this.originalGone(file, outcome.disposition);
        this.finish(file, outcome.disposition);
        return;
      }
      case 'skipped':
        this.stats.skipped++;
        this.deps.record(file, 'skipped', { reason: outcome.reason });
        logger.info({ ...fields, reason: outcome.reason }, `skipped ${fields.file}: ${outcome.reason}`);
        this.park(file.path, 'skipped', Number.POSITIVE_INFINITY);
        return;
      case 'failed': {
        const entry = this.entries.get(file.path);
        const failures = (entry?.failures ?? 0) + 1;
        const delayMs = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** (failures - 1));
        const givingUp = outcome.stage === 'upload' && failures >= (this.deps.maxUploadTries ?? MAX_UPLOAD_TRIES);
        const retrying = outcome.retryable && this.deps.retryFailed && !givingUp;
        const retryAt = retrying ? clock.monotonic() + delayMs : Number.POSITIVE_INFINITY;
        const logged = outcome.loggedAs === undefined ? '' : ` (in Immich's log as ${outcome.loggedAs})`;
        this.deps.record(file, 'failed', {
          error: `${outcome.stage}: ${outcome.message}${logged}`,
          nextRetryAt: retrying ? clock.now() + delayMs : null,
        });
        const gaveUp = outcome.retryable && this.deps.retryFailed && givingUp ? `; tried ${failures} times: tried again when it changes, after a restart, or with \`retry\`` : '';
        // Said once per file: the same failure at each try of it (hourly, in the end) is no news.
        const news = entry?.failedWith !== outcome.message || gaveUp !== '';
        logger[news ? 'error' : 'debug'](
          { ...fields, stage: outcome.stage, error: outcome.message, ...(Number.isFinite(retryAt) ? { retryInMs: delayMs } : {}) },
          `failed ${fields.file}: ${outcome.message}${logged}${gaveUp}`,
        );
        this.park(file.path, 'failed', retryAt, failures, outcome.stage);
        const parked = this.entries.get(file.path);
        if (parked) parked.failedWith = outcome.message;
        if (Number.isFinite(retryAt)) this.retryLater(file, delayMs);
        return;
      }
      case 'changed':
        if (outcome.uploadedAs === undefined) {
          logger.debug(fields, 'file changed while being processed; looking at it again');
        } else if (outcome.replaced) {
          // A new version put in its place whole: what the server got was complete.
          logger.info(
            { ...fields, assetId: outcome.uploadedAs },
            `${fields.file} was replaced by another file after it was uploaded (Immich keeps the one before, asset ${outcome.uploadedAs}): the new one goes round`,
          );
        } else {
          // The one sign the user gets of a program that pauses longer than the window while
          // it writes: the server holds a partial photo, and only the user may delete it.
          logger.warn(
            { ...fields, assetId: outcome.uploadedAs },
            `${fields.file} was written to again after it was uploaded: it goes round again. ${incompleteUploadAdvice(outcome.uploadedAs, this.deps.waitMs)}`,
          );
        }
        await this.resettle(file);
        return;
      case 'aborted':
        // Stopped on its way (shutdown): it stays where it is, for the next run.
        this.stats.interrupted++;
        this.forget(file.path);
        return;
    }
  }

  /** A file the server has: forgotten, unless its original was left in place (see leave). */
  private finish(file: Candidate, disposition: Disposition): void {
    if (disposition.mode === 'left') this.leave(file, disposition.folder, disposition.problem);
    else this.forget(file.path);
  }

  /**
   * The original could not be moved or deleted, as its folder cannot be written to (a card with
   * its lock switch on, a read-only mount): it stays, and this version is not tried again on a
   * timer, which would read it again each time. The folder is looked at again when the file is
   * seen again (a rescan, the card put back), at most once a second: once it can be written to,
   * its files go on to the archive. A restart tries them again too (the journal's `kept` counts
   * as done only in keep mode).
   */
  private leave(file: Candidate, folder: string, problem: string): void {
    const entry = this.entries.get(file.path);
    if (!entry) return;
    if (!this.unwritable.has(folder)) {
      const shown = relative(file.root.path, folder) || '.';
      this.unwritable.set(folder, { shown, lookedAt: this.deps.clock.monotonic() });
      this.deps.logger.warn(
        { folder, error: `the folder ${problem}` },
        `the originals in ${shown} stay there: the folder ${problem} (a card's lock switch, a read-only mount, its owner). ` +
          'They are on the server, and go on as AFTER_UPLOAD says once it can be written to; set AFTER_UPLOAD=keep to leave such folders as they are',
      );
    }
    const newer = entry.newerSeen === true;
    entry.newerSeen = false;
    this.park(file.path, 'left', Number.POSITIVE_INFINITY);
    if (newer) void this.reoffer(entry.file);
  }

  /** Looks again at a folder whose originals were left in place; once writable, they go round. */
  private lookAgainAt(folder: string): void {
    const known = this.unwritable.get(folder);
    const now = this.deps.clock.monotonic();
    if (!known || now - known.lookedAt < UNWRITABLE_LOOK_MS) return;
    known.lookedAt = now;
    void (this.deps.writable?.(folder) ?? Promise.resolve(false)).then((yes) => {
      if (!yes || this.stopped) return;
      this.unwritable.delete(folder);
      this.deps.logger.info({ folder }, `${known.shown} can be written to now: the originals left there go on`);
      for (const entry of [...this.entries.values()]) {
        if (entry.state === 'left' && dirname(entry.file.path) === folder) this.track(entry.file);
      }
    });
  }

  private skipEmpty(candidate: Candidate): void {
    const entry = this.entries.get(candidate.path);
    if (!entry) return;
    this.stats.skipped++;
    this.deps.record(candidate, 'skipped', { reason: 'empty file' });
    this.deps.logger.info({ file: this.display(candidate), bytes: 0 }, `skipped ${this.display(candidate)}: empty file`);
    entry.file = candidate;
    this.park(candidate.path, 'skipped', Number.POSITIVE_INFINITY);
  }

  private retryNow(which: (entry: Entry) => boolean): number {
    let count = 0;
    for (const entry of [...this.entries.values()]) {
      if (entry.state !== 'failed' || !which(entry)) continue;
      entry.retryAt = 0;
      // Asked for: its outcome is news again, whatever it is.
      entry.failedWith = undefined;
      count++;
      void this.reoffer(entry.file);
    }
    return count;
  }

  private retryLater(file: Candidate, delayMs: number): void {
    // A cancelled timer (shutdown) is the only rejection, and it means "do nothing".
    void this.deps.clock.sleep(delayMs, this.retryTimers.signal).then(
      () => this.reoffer(file),
      () => undefined,
    );
  }

  private async reoffer(file: Candidate): Promise<void> {
    const current = await currentVersion(file);
    if (current) this.offer(current);
    // A failed file removed meanwhile is failed no more.
    else if (this.entries.get(file.path)?.state === 'failed') this.vanished(file.path);
  }

  /** Sends a file that changed under us back to settling, without it ever counting as idle. */
  private async resettle(file: SettledFile): Promise<void> {
    const current = await currentVersion(file);
    if (!current || this.stopped) {
      if (!current) this.deps.record(file, 'gone');
      this.forget(file.path);
      return;
    }
    this.track(current);
  }

  /** Starts (or restarts) a file version on its way: recorded, then settling. `failed`: its failures so far, carried to the next try. */
  private track(candidate: Candidate, failed?: Pick<Entry, 'failures' | 'failedWith'>): void {
    const previous = this.entries.get(candidate.path);
    if (previous) this.countParked(previous.state, -1);
    if (!previous || !isBusy(previous.state)) this.inProgress++;
    this.entries.set(candidate.path, {
      file: candidate,
      state: 'settling',
      failures: failed?.failures,
      failedWith: failed?.failedWith,
    });
    this.deps.record(candidate, 'discovered');
    this.deps.logger.trace({ file: candidate.path, bytes: candidate.size }, 'settling');
    this.settler.add(candidate);
  }

  private park(path: string, state: 'skipped' | 'failed' | 'left', retryAt: number, failures?: number, failedAt?: FailedStage): void {
    const entry = this.entries.get(path);
    if (!entry) return;
    if (isBusy(entry.state)) this.done();
    this.countParked(entry.state, -1);
    entry.state = state;
    this.countParked(state, 1);
    entry.retryAt = retryAt;
    entry.failures = failures;
    entry.failedAt = failedAt;
  }

  private vanished(path: string): void {
    const entry = this.entries.get(path);
    if (entry) this.deps.record(entry.file, 'gone');
    this.forget(path);
  }

  private forget(path: string): void {
    const entry = this.entries.get(path);
    if (!entry) return;
    this.entries.delete(path);
    this.countParked(entry.state, -1);
    if (isBusy(entry.state)) this.done();
    if (entry.newerSeen && !this.stopped) void this.reoffer(entry.file);
  }

  /**
   * Counts files failed and left in place as they are now: a file tried ten times counts once, and
   * no more once it goes through.
   */
  private countParked(state: EntryState, by: 1 | -1): void {
    if (state === 'failed') this.stats.failed += by;
    else if (state === 'left') this.stats.left += by;
  }

  private done(): void {
    this.inProgress--;
    if (this.inProgress < this.deps.maxInProgress) this.roomWaiters.wakeAll();
    if (this.inProgress <= 0) this.idleWaiters.wakeAll();
  }

  private display(file: Candidate): string {
    return relative(file.root.path, file.path);
  }
}

function dispositionFields(disposition: Disposition): Record<string, string> {
  switch (disposition.mode) {
    case 'move':
      return { archivedTo: disposition.archivedTo };
    case 'delete':
      return { original: 'deleted' };
    case 'keep':
      return { original: 'kept' };
    case 'left':
      return { original: 'left in place' };
  }
}



async function currentVersion(file: Candidate): Promise<Candidate | undefined> {
  try {
    const stat = await lstat(file.path);
    return stat.isFile() ? { path: file.path, root: file.root, size: stat.size, mtimeMs: stat.mtimeMs } : undefined;
  } catch {
    return undefined; // gone: nothing left to do for it
  }
}

function isBusy(state: EntryState): boolean {
  return state === 'settling' || state === 'queued' || state === 'active';
}
