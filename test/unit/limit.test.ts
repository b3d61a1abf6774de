import PQueue from 'p-queue';
import { describe, expect, it } from 'vitest';
import { limitWhileWaiting } from '../../src/support/limit.js';

function deferred<T>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve: (value: T) => void = () => undefined;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

describe('limitWhileWaiting', () => {
  it('lets started work finish after the signal, and drops work still waiting', async () => {
    const stop = new AbortController();
    const limit = limitWhileWaiting(new PQueue({ concurrency: 1 }), stop.signal);
    const running = deferred<string>();
    const started: string[] = [];
    const first = limit(async () => {
      started.push('first');
      return running.promise;
    });
    const second = limit(async () => {
      started.push('second');
      return 'second';
    });
    await Promise.resolve();
    expect(started).toEqual(['first']);

    stop.abort(new Error('stopping'));
    await expect(second).rejects.toThrow('stopping');
    running.resolve('first done');
    await expect(first).resolves.toBe('first done');
    expect(started).toEqual(['first']);
  });

  it('refuses new work once stopped, and passes a failure of the work through', async () => {
    const stop = new AbortController();
    const limit = limitWhileWaiting(new PQueue({ concurrency: 2 }), stop.signal);
    await expect(limit(() => Promise.reject(new Error('disk full')))).rejects.toThrow('disk full');
    stop.abort(new Error('stopping'));
    await expect(limit(() => Promise.resolve('late'))).rejects.toThrow('stopping');
  });

  it('drops work whose own signal aborts while it waits, and only that work', async () => {
    const limit = limitWhileWaiting(new PQueue({ concurrency: 1 }), new AbortController().signal);
    const running = deferred<string>();
    const first = limit(() => running.promise);
    const leave = new AbortController();
    const started: string[] = [];
    const cancelled = limit(async () => {
      started.push('cancelled');
      return 'cancelled';
    }, leave.signal);
    const third = limit(async () => {
      started.push('third');
      return 'third';
    });
    leave.abort(new Error('not needed'));
    await expect(cancelled).rejects.toThrow('not needed');
    running.resolve('first done');
    await expect(first).resolves.toBe('first done');
    await expect(third).resolves.toBe('third');
    expect(started).toEqual(['third']);
  });
});
