import type { Logger } from 'pino';
import { abortReason, type Clock } from '../support/clock.js';
import { messageOf } from '../support/message.js';
import type { Problems } from '../support/problems.js';
import { backoffDelay, retry, type RetryPolicy, type RetryVerdict } from '../support/retry.js';
import { Waiters } from '../support/waiters.js';
import type { BulkCheckItem, BulkCheckResult, ImmichClient, UploadRequest, UploadResult } from './client.js';
import { isGatewayTrouble, isImmichError, type ImmichError } from './errors.js';

/** Per-request persistence: enough that a server failing a third of its requests still gets every file. */
export const REQUEST_RETRY_POLICY: RetryPolicy = { maxAttempts: 10, baseDelayMs: 250, maxDelayMs: 30_000 };
/**
 * Retries of one request that cost it nothing, as the server was down and came back: past these,
 * each counts, so that a file whose upload takes the server down each time fails in the end.
 */
const MAX_FREE_RETRIES = 5;
/**
 * What the retries of one upload after failures that came once it was sent whole (an answer of
 * 500-599 or 408: Immich failing on it, a proxy timing out; or no answer, the connection closed)
 * may send again within one try of its file, beyond the first send: a photo gets every attempt
 * of the policy, a 1 GB video one more, a 4 GB one none (its file is tried again after a minute,
 * then less and less often: coordinator.ts). A video Immich fails on, or a proxy cuts off, is
 * then not sent ten times over at each try. A connection dropped while sending, which only
 * sending again gets past, is not held to it, nor a 429 (busy), nor a wait at the gate while the
 * server is down or at the open breaker.
 */
const UPLOAD_RESEND_BUDGET_BYTES = 1024 ** 3;
/** How often an unreachable server is asked again. */
const PROBE_POLICY: RetryPolicy = { maxAttempts: Number.POSITIVE_INFINITY, baseDelayMs: 1_000, maxDelayMs: 30_000 };

/**
 * A `once` run gave up waiting for the server: the file stays for the next run (a cron job's
 * next run must not find this one still waiting).
 */
export class GaveUpWaitingError extends Error {
  override readonly name = 'GaveUpWaitingError';
}

/**
 * How long a request waits for a server that does not answer, or fails every upload (`once`):
 * `onGiveUp` is told the first time a wait ends so, and the run stops taking new files.
 */
export interface Patience {
  giveUpAfterMs: number;
  onGiveUp?: (reason: string) => void;
}

/**
 * Knows whether the server answers. While it does not, every request waits here instead of
 * failing its file: one probe (a ping with backoff) runs for all of them, and they resume
 * together when it answers. With `patience` (`once`), the wait ends after its time, and from then
 * on a request waits for one ping only, until the server answers again.
 */
export class ServerGate {
  private probe: Promise<boolean> | undefined;
  #gaveUp = false;

  constructor(
    private readonly deps: {
      client: Pick<ImmichClient, 'ping'>;
      clock: Clock;
      logger: Logger;
      /** Ends the probing for good (shutdown). */
      signal: AbortSignal;
      policy?: RetryPolicy;
      problems?: Pick<Problems, 'raise' | 'clear'>;
      patience?: Patience;
      /**
       * The server answers again after it did not (it may have been upgraded meanwhile): the
       * requests waiting resume once this is done. Must not reject.
       */
      onAnswersAgain?: () => Promise<void>;
    },
  ) {}

  /** Resolves when the server answers a ping; true when it did not answer at first. */
  waitUntilUp(signal?: AbortSignal): Promise<boolean> {
    this.probe ??= this.runProbe().finally(() => {
      this.probe = undefined;
    });
    return raceAbort(this.probe, signal);
  }

  /** A request went through: a server given up on answers again (no probe ran to see it). */
  answered(): void {
    if (!this.#gaveUp) return;
    this.#gaveUp = false;
    this.deps.problems?.clear('server');
  }

  private async runProbe(): Promise<boolean> {
    const { client, clock, logger, signal, problems } = this.deps;
    const policy = this.deps.policy ?? PROBE_POLICY;
    const downSince = clock.monotonic();
    for (let attempt = 1; ; attempt++) {
      try {
        await client.ping(signal);
        this.#gaveUp = false;
        problems?.clear('server');
        if (attempt > 1) {
          logger.info({ downForMs: Math.round(clock.monotonic() - downSince) }, 'Immich server answers again; resuming');
          await this.deps.onAnswersAgain?.();
        }
        return attempt > 1;
      } catch (error) {
        if (signal.aborted) throw abortReason(signal);
        const delayMs = backoffDelay(attempt, policy);
        const reason = messageOf(error);
        const { patience } = this.deps;
        if (patience && (this.#gaveUp || clock.monotonic() - downSince + delayMs > patience.giveUpAfterMs)) {
          const message = `the Immich server did not answer for ${patience.giveUpAfterMs / 1000} s (${reason})`;
          if (!this.#gaveUp) patience.onGiveUp?.(message);
          this.#gaveUp = true;
          throw new GaveUpWaitingError(message);
        }
        if (attempt === 1) {
          const message = `Immich server is not answering (${reason}); uploads wait until it does`;
          problems?.raise('server', message);
          logger.warn({ reason }, message);
        } else {
          logger.debug({ reason, retryInMs: delayMs }, 'Immich server still not answering');
        }
        await clock.sleep(delayMs, signal);
      }
    }
  }
}

/**
 * Immich failing the uploads of several files in a row with an error of its own (500: the disk
 * of its library full, say) is the server's trouble, not the files': each would otherwise fail
 * and be tried again on its own timer, with a line in the log each time, for as long as it lasts,
 * and wait up to an hour after it is over. Uploads wait here instead, and one at a time goes to
 * see whether the server takes uploads again: after 30 s, then twice as long each time, up to
 * 10 minutes. A file the server fails on alone (the others go through) never opens it: it takes
 * `threshold` different files in a row.
 */
export class UploadBreaker {
  /** The uploads failed in a row since the last one that went through. */
  #failing = new Set<object>();
  #open = false;
  /** The wait before the first trial; each trial that fails doubles it, up to `maxDelayMs`. */
  readonly #firstDelayMs: number;
  #delayMs: number;
  /** When the next upload may go to see, while open (`clock.monotonic()`). */
  #trialAt = 0;
  /** The upload that went to see, while it is on its way. */
  #trial: object | undefined;
  /** When it opened (`clock.monotonic()`), and why. */
  #openedAt = 0;
  #reason = '';
  #gaveUp = false;
  readonly #waiters = new Waiters();

  constructor(
    private readonly deps: {
      clock: Clock;
      logger: Logger;
      threshold?: number;
      firstDelayMs?: number;
      maxDelayMs?: number;
      problems?: Pick<Problems, 'raise' | 'clear'>;
      /** `once`: how long uploads wait while it is open; then they fail, but for the trials. */
      patience?: Patience;
    },
  ) {
    this.#firstDelayMs = deps.firstDelayMs ?? 30_000;
    this.#delayMs = this.#firstDelayMs;
  }

  get isOpen(): boolean {
    return this.#open;
  }

  /** Resolves when `upload` may be sent: at once while uploads go through. */
  async pass(upload: object, signal?: AbortSignal): Promise<void> {
    const { clock, patience } = this.deps;
    while (this.#open && this.#trial !== upload) {
      const untilTrial = this.#trialAt - clock.monotonic();
      if (this.#trial === undefined && untilTrial <= 0) {
        this.#trial = upload;
        return;
      }
      // Given up, uploads fail at once, but a trial still goes when one is due.
      const giveUpIn = patience === undefined ? Number.POSITIVE_INFINITY : this.#openedAt + patience.giveUpAfterMs - clock.monotonic();
      if (giveUpIn <= 0 && patience) {
        const message = `Immich failed every upload for ${patience.giveUpAfterMs / 1000} s (${this.#reason})`;
        if (!this.#gaveUp) patience.onGiveUp?.(message);
        this.#gaveUp = true;
        throw new GaveUpWaitingError(message);
      }
      // Until the state changes, or (no upload on its way) the next one may go to see, or the wait is given up.
      const wait = Math.min(this.#trial === undefined ? untilTrial : Number.POSITIVE_INFINITY, giveUpIn);
      const timer = new AbortController();
      const woken = this.#waiters.next();
      const due = Number.isFinite(wait) ? clock.sleep(wait, timer.signal).catch(() => undefined) : woken;
      try {
        await raceAbort(Promise.race([woken, due]), signal);
      } finally {
        timer.abort();
      }
    }
  }

  /** An upload went through: uploads go on. */
  succeeded(): void {
    this.#failing.clear();
    if (!this.#open) return;
    this.#open = false;
    this.#trial = undefined;
    this.#delayMs = this.#firstDelayMs;
    this.deps.problems?.clear('uploads');
    this.deps.logger.info('Immich takes uploads again; resuming');
    this.#waiters.wakeAll();
  }

  /** An upload failed: `serverTrouble` when with an error of the server's own (500, 507...). */
  failed(upload: object, serverTrouble: boolean, reason: string): void {
    if (this.#trial === upload) {
      this.#trial = undefined;
      if (serverTrouble) this.#delayMs = Math.min(2 * this.#delayMs, this.deps.maxDelayMs ?? 600_000);
      this.#trialAt = this.deps.clock.monotonic() + this.#delayMs;
      this.#waiters.wakeAll();
      return;
    }
    if (!serverTrouble || this.#open) return;
    this.#failing.add(upload);
    if (this.#failing.size < (this.deps.threshold ?? 3)) return;
    this.#open = true;
    this.#openedAt = this.deps.clock.monotonic();
    this.#reason = reason;
    this.#trialAt = this.#openedAt + this.#delayMs;
    const message = `Immich failed the uploads of ${this.#failing.size} files in a row (${reason}): uploads wait, and one is tried now and then until the server takes it`;
    this.deps.problems?.raise('uploads', message);
    this.deps.logger.warn({ reason, files: this.#failing.size }, message);
  }
}

/**
 * The client with the project's retry policy around every call: 5xx, 408 and 429 are retried
 * with backoff (honouring Retry-After), a server that stops answering pauses the caller until
 * it is back (without using up attempts), and anything else is final.
 */
export class ResilientImmich {
  private readonly breaker: UploadBreaker;

  constructor(
    private readonly deps: {
      client: ImmichClient;
      gate: ServerGate;
      clock: Clock;
      logger: Logger;
      policy?: RetryPolicy;
      breaker?: UploadBreaker;
      problems?: Pick<Problems, 'raise' | 'clear'>;
      resendBudgetBytes?: number;
      /** For the breaker made here: see UploadBreaker. */
      patience?: Patience;
    },
  ) {
    const { clock, logger, problems, patience } = deps;
    this.breaker = deps.breaker ?? new UploadBreaker({ clock, logger, problems, ...(patience ? { patience } : {}) });
  }

  get client(): ImmichClient {
    return this.deps.client;
  }

  bulkUploadCheck(items: BulkCheckItem[], signals: CallSignals): Promise<BulkCheckResult[]> {
    return this.withRetry('bulk-upload-check', (signal) => this.deps.client.bulkUploadCheck(items, signal), signals);
  }

  uploadAsset(request: UploadRequest, signals: CallSignals): Promise<UploadResult> {
    const { breaker } = this;
    const size = 'bytes' in request.file ? request.file.bytes.length : request.file.size;
    const sendsAllowed = 1 + Math.floor((this.deps.resendBudgetBytes ?? UPLOAD_RESEND_BUDGET_BYTES) / Math.max(1, size));
    let failedByServer = 0;
    const send = async (signal?: AbortSignal): Promise<UploadResult> => {
      await breaker.pass(request, signals.wait);
      try {
        const result = await this.deps.client.uploadAsset(request, signal);
        breaker.succeeded();
        return result;
      } catch (error) {
        breaker.failed(request, isServerTrouble(error), messageOf(error));
        throw error;
      }
    };
    // Asked once per failure, once the gate has said the server was up: a send an outage cut
    // short costs the file nothing.
    const spent = (error: unknown): boolean => {
      if (!failedOnceSent(error) || breaker.isOpen) return false;
      failedByServer++;
      return failedByServer >= sendsAllowed;
    };
    return this.withRetry('upload', send, signals, spent);
  }

  /** `isFinal`: a failure not to retry, though the policy would (asked once the gate says the server is up). */
  private withRetry<T>(
    what: string,
    call: (signal?: AbortSignal) => Promise<T>,
    signals: CallSignals,
    isFinal: (error: unknown) => boolean = () => false,
  ): Promise<T> {
    const { gate, clock, logger } = this.deps;
    let freeRetries = 0;
    const answered = (result: T): T => {
      gate.answered();
      return result;
    };
    return retry(() => call(signals.request).then(answered), {
      policy: this.deps.policy ?? REQUEST_RETRY_POLICY,
      clock,
      signal: signals.wait,
      classify: async (error): Promise<RetryVerdict> => {
        if (!isImmichError(error)) return { retry: false };
        // Waiting for the server to take uploads again costs the file nothing either.
        if (isServerTrouble(error) && this.breaker.isOpen) return { retry: true, free: true };
        if (!mayBeDown(error)) {
          return error.kind === 'server' && !isFinal(error) ? { retry: true, atLeastMs: error.details.retryAfterMs } : { retry: false };
        }
        // A dropped connection, or a proxy's answer, may be the server going away or just this
        // request: the gate tells which. Waiting out an outage costs the file nothing.
        const wasDown = await gate.waitUntilUp(signals.wait);
        if (wasDown && freeRetries < MAX_FREE_RETRIES) {
          freeRetries++;
          return { retry: true, free: true };
        }
        // Up all along: a 404 is Immich's own answer, and final.
        if ((error.kind === 'rejected' && !wasDown) || isFinal(error)) return { retry: false };
        return { retry: true, atLeastMs: error.details.retryAfterMs };
      },
      onRetry: ({ error, attempt, delayMs }) =>
        logger.debug({ what, attempt, delayMs, reason: messageOf(error) }, 'retrying'),
    });
  }
}

/**
 * A failure after the upload was sent, which sending it again might not change: an answer of
 * 500-599 or 408, or none at all (a proxy giving up on Immich's answer closes the connection).
 */
function failedOnceSent(error: unknown): boolean {
  if (!isImmichError(error)) return false;
  if (error.kind === 'network') return error.details.dropped === true;
  return error.kind === 'server' && ((error.status ?? 0) >= 500 || error.status === 408);
}

/** An error of the server's own making (500, 507...), not a proxy's, nor one of being busy (429, 408). */
function isServerTrouble(error: unknown): boolean {
  return isImmichError(error) && error.kind === 'server' && (error.status ?? 0) >= 500 && !isGatewayTrouble(error);
}

/**
 * Whether a failed call may mean the server is down: no answer, a proxy's 502, 503 or 504, or a
 * 404 for a route every Immich has (Traefik answers 404 while Immich's container is made anew).
 */
export function mayBeDown(error: ImmichError): boolean {
  return error.kind === 'network' || isGatewayTrouble(error) || error.status === 404;
}

/**
 * Two signals per call: `wait` ends waiting (backoff, paused queue) as soon as shutdown begins;
 * `request` aborts a request already on the wire, which shutdown only does after the grace period.
 */
export interface CallSignals {
  wait?: AbortSignal;
  request?: AbortSignal;
}


/** Settles with `promise`, or rejects with the signal's reason as soon as it aborts. */
export function raceAbort<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(abortReason(signal));
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(abortReason(signal));
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error instanceof Error ? error : new Error(String(error)));
      },
    );
  });
}
