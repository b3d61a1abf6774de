import type { Logger } from 'pino';
import { abortReason, type Clock } from '../support/clock.js';
import { messageOf } from '../support/message.js';
import { backoffDelay, retry, type RetryPolicy, type RetryVerdict } from '../support/retry.js';
import type { BulkCheckItem, BulkCheckResult, ImmichClient, UploadRequest, UploadResult } from './client.js';
import { isGatewayTrouble, isImmichError, type ImmichError } from './errors.js';

/** Per-request persistence: enough that a server failing a third of its requests still gets every file. */
export const REQUEST_RETRY_POLICY: RetryPolicy = { maxAttempts: 10, baseDelayMs: 250, maxDelayMs: 30_000 };
/**
 * Retries of one request that cost it nothing, as the server was down and came back: past these,
 * each counts, so that a file whose upload takes the server down each time fails in the end.
 */
const MAX_FREE_RETRIES = 5;
/** How often an unreachable server is asked again. */
const PROBE_POLICY: RetryPolicy = { maxAttempts: Number.POSITIVE_INFINITY, baseDelayMs: 1_000, maxDelayMs: 30_000 };

/**
 * Knows whether the server answers. While it does not, every request waits here instead of
 * failing its file: one probe (a ping with backoff) runs for all of them, and they resume
 * together when it answers.
 */
export class ServerGate {
  private probe: Promise<boolean> | undefined;

  constructor(
    private readonly deps: {
      client: Pick<ImmichClient, 'ping'>;
      clock: Clock;
      logger: Logger;
      /** Ends the probing for good (shutdown). */
      signal: AbortSignal;
      policy?: RetryPolicy;
    },
  ) {}

  /** Resolves when the server answers a ping; true when it did not answer at first. */
  waitUntilUp(signal?: AbortSignal): Promise<boolean> {
    this.probe ??= this.runProbe().finally(() => {
      this.probe = undefined;
    });
    return raceAbort(this.probe, signal);
  }

  private async runProbe(): Promise<boolean> {
    const { client, clock, logger, signal } = this.deps;
    const policy = this.deps.policy ?? PROBE_POLICY;
    const downSince = clock.monotonic();
    for (let attempt = 1; ; attempt++) {
      try {
        await client.ping(signal);
        if (attempt > 1) {
          logger.info({ downForMs: Math.round(clock.monotonic() - downSince) }, 'Immich server answers again; resuming');
        }
        return attempt > 1;
      } catch (error) {
        if (signal.aborted) throw abortReason(signal);
        const delayMs = backoffDelay(attempt, policy);
        const reason = messageOf(error);
        if (attempt === 1) {
          logger.warn({ reason }, `Immich server is not answering (${reason}); uploads wait until it does`);
        } else {
          logger.debug({ reason, retryInMs: delayMs }, 'Immich server still not answering');
        }
        await clock.sleep(delayMs, signal);
      }
    }
  }
}

/**
 * The client with the project's retry policy around every call: 5xx, 408 and 429 are retried
 * with backoff (honouring Retry-After), a server that stops answering pauses the caller until
 * it is back (without using up attempts), and anything else is final.
 */
export class ResilientImmich {
  constructor(
    private readonly deps: {
      client: ImmichClient;
      gate: ServerGate;
      clock: Clock;
      logger: Logger;
      policy?: RetryPolicy;
    },
  ) {}

  get client(): ImmichClient {
    return this.deps.client;
  }

  bulkUploadCheck(items: BulkCheckItem[], signals: CallSignals): Promise<BulkCheckResult[]> {
    return this.withRetry('bulk-upload-check', (signal) => this.deps.client.bulkUploadCheck(items, signal), signals);
  }

  uploadAsset(request: UploadRequest, signals: CallSignals): Promise<UploadResult> {
    return this.withRetry('upload', (signal) => this.deps.client.uploadAsset(request, signal), signals);
  }

  private withRetry<T>(what: string, call: (signal?: AbortSignal) => Promise<T>, signals: CallSignals): Promise<T> {
    const { gate, clock, logger } = this.deps;
    let freeRetries = 0;
    return retry(() => call(signals.request), {
      policy: this.deps.policy ?? REQUEST_RETRY_POLICY,
      clock,
      signal: signals.wait,
      classify: async (error): Promise<RetryVerdict> => {
        if (!isImmichError(error)) return { retry: false };
        if (!mayBeDown(error)) return error.kind === 'server' ? { retry: true, atLeastMs: error.details.retryAfterMs } : { retry: false };
        // A dropped connection, or a proxy's answer, may be the server going away or just this
        // request: the gate tells which. Waiting out an outage costs the file nothing.
        const wasDown = await gate.waitUntilUp(signals.wait);
        if (wasDown && freeRetries < MAX_FREE_RETRIES) {
          freeRetries++;
          return { retry: true, free: true };
        }
        // Up all along: a 404 is Immich's own answer, and final.
        if (error.kind === 'rejected' && !wasDown) return { retry: false };
        return { retry: true, atLeastMs: error.details.retryAfterMs };
      },
      onRetry: ({ error, attempt, delayMs }) =>
        logger.debug({ what, attempt, delayMs, reason: messageOf(error) }, 'retrying'),
    });
  }
}

/**
 * Whether a failed call may mean the server is down: no answer, a proxy's 502, 503 or 504, or a
 * 404 for the upload routes every Immich has (Traefik answers 404 while Immich's container is
 * made anew).
 */
function mayBeDown(error: ImmichError): boolean {
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
