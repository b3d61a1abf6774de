import type { Clock } from './clock.js';

/** How persistent a retried operation is. */
export interface RetryPolicy {
  /** Attempts in all, the first one included. */
  maxAttempts: number;
  /** Delay before the second attempt; it doubles each time, up to maxDelayMs. */
  baseDelayMs: number;
  maxDelayMs: number;
}

/** What the caller says about one failure. */
export type RetryVerdict =
  /** Give up at once and rethrow. */
  | { retry: false }
  /**
   * Try again. `atLeastMs` is a delay the server asked for (Retry-After); `free` means the
   * failure was not the operation's fault (the server was down and has come back), so it does
   * not use up an attempt.
   */
  | { retry: true; atLeastMs?: number; free?: boolean };

export interface RetryOptions {
  policy: RetryPolicy;
  clock: Clock;
  /** Stops the waiting between attempts; the pending sleep rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Classifies a failure. May wait (e.g. until the server answers again) before returning. */
  classify: (error: unknown, attempt: number) => RetryVerdict | Promise<RetryVerdict>;
  /** Called before each wait, for logging. */
  onRetry?: (info: { error: unknown; attempt: number; delayMs: number }) => void;
  /** Source of randomness for the jitter; injectable so tests are deterministic. */
  random?: () => number;
}

/** Exponential backoff with "equal jitter": half the delay fixed, half random. */
export function backoffDelay(attempt: number, policy: RetryPolicy, random: () => number = Math.random): number {
  const exponential = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(exponential / 2 + (random() * exponential) / 2);
}

/**
 * Runs `operation` until it succeeds, the classifier says a failure is final, the attempts run
 * out, or the signal aborts. The one retry loop of the project: everything that retries uses it.
 */
export async function retry<T>(operation: (attempt: number) => Promise<T>, options: RetryOptions): Promise<T> {
  const { policy, clock, signal, classify, onRetry, random } = options;
  let counted = 0;
  for (let attempt = 1; ; attempt++) {
    signal?.throwIfAborted();
    try {
      return await operation(attempt);
    } catch (error) {
      if (signal?.aborted) throw error;
      const verdict = await classify(error, attempt);
      if (!verdict.retry) throw error;
      if (!verdict.free) counted++;
      if (counted >= policy.maxAttempts) throw error;
      const delayMs = verdict.free
        ? 0
        : Math.min(Math.max(backoffDelay(counted, policy, random), verdict.atLeastMs ?? 0), MAX_SERVER_DELAY_MS);
      onRetry?.({ error, attempt, delayMs });
      if (delayMs > 0) await clock.sleep(delayMs, signal);
    }
  }
}

/** A Retry-After longer than this is not honoured in full: we check back after this long. */
const MAX_SERVER_DELAY_MS = 5 * 60_000;
