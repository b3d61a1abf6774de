/**
 * Time as a dependency. Stability windows, backoff and batching take a Clock so their tests can
 * run on fake time; only the composition root uses the real one.
 */
export interface Clock {
  /**
   * Milliseconds since the epoch: the system's time, for what is recorded or compared with
   * records (the journal's times, a failed file's next try as `status` shows it, the 24 hours of
   * late sidecars). It jumps when the system's time is set.
   */
  now(): number;
  /**
   * Milliseconds from an arbitrary origin on a clock that only runs forward, at the pace of real
   * time: for waits and deadlines within this process (the stability window, grace periods,
   * retries kept in memory, durations). The system's time can jump: a Raspberry Pi, which has no
   * clock of its own, boots with the time it last saved, and NTP sets it forward minutes later,
   * by hours or days. A stability window measured with `now()` would end at that moment, and a
   * file whose copy had paused for a second be taken as complete.
   */
  monotonic(): number;
  /**
   * Resolves after `ms`. Rejects with the signal's reason (an AbortError by default) when the
   * signal aborts first; never leaves a timer behind after an abort.
   */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  monotonic: () => performance.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) {
        reject(abortReason(signal));
        return;
      }
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      const onAbort = (): void => {
        clearTimeout(timer);
        reject(abortReason(signal));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
    }),
};

/** The reason an aborted signal carries, always as an Error. */
export function abortReason(signal: AbortSignal | undefined): Error {
  const reason: unknown = signal?.reason;
  if (reason instanceof Error) return reason;
  const error = new Error('The operation was aborted');
  error.name = 'AbortError';
  return error;
}

export function isAbortError(error: unknown): boolean {
  return error instanceof Error && (error.name === 'AbortError' || error.name === 'TimeoutError');
}

/**
 * A signal that aborts when `a` or `b` does, with its reason, and `release`, which detaches it
 * from both. Unlike `AbortSignal.any`, it leaves nothing behind on a long-lived signal once
 * released: on Node 20, every `any()` stays registered with its inputs for as long as they live
 * (measured: a combination a second with the daemon's stop signal, as the settle loop made one
 * per tick, grows the heap by about 7 MB a day).
 */
export function eitherSignal(a: AbortSignal | undefined, b: AbortSignal): { signal: AbortSignal; release: () => void } {
  if (!a) return { signal: b, release: () => undefined };
  const controller = new AbortController();
  const fromA = (): void => controller.abort(a.reason);
  const fromB = (): void => controller.abort(b.reason);
  const release = (): void => {
    a.removeEventListener('abort', fromA);
    b.removeEventListener('abort', fromB);
  };
  if (a.aborted) fromA();
  else if (b.aborted) fromB();
  else {
    a.addEventListener('abort', fromA, { once: true });
    b.addEventListener('abort', fromB, { once: true });
  }
  return { signal: controller.signal, release };
}
