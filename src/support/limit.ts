import type PQueue from 'p-queue';
import { abortReason, eitherSignal } from './clock.js';

/** Runs `work` within a concurrency; `leaveOn` also drops it while it waits for a slot. */
export type Limit = <T>(work: () => Promise<T>, leaveOn?: AbortSignal) => Promise<T>;

/**
 * Runs work within a queue's concurrency. The signal drops work that is still waiting for a slot;
 * work that has started runs to its end (its own signals stop it). p-queue's `signal` option is
 * not used because it also rejects work that is already running: on the first stop signal every
 * upload in flight would be abandoned at once instead of finishing within the grace period.
 */
export function limitWhileWaiting(queue: PQueue, stop: AbortSignal): Limit {
  return <T>(work: () => Promise<T>, leaveOn?: AbortSignal): Promise<T> => {
    const { signal, release } = eitherSignal(leaveOn, stop);
    if (signal.aborted) {
      release();
      return Promise.reject(abortReason(signal));
    }
    return new Promise<T>((resolve, reject) => {
      const drop = (): void => {
        release();
        reject(abortReason(signal));
      };
      signal.addEventListener('abort', drop, { once: true });
      void queue.add(async () => {
        signal.removeEventListener('abort', drop);
        release();
        // Dropped while it waited: the caller already has its rejection.
        if (signal.aborted) return;
        try {
          resolve(await work());
        } catch (error) {
          reject(error instanceof Error ? error : new Error(String(error)));
        }
      });
    });
  };
}
