import { describe, expect, it } from 'vitest';
import { backoffDelay, retry, type RetryPolicy } from '../../src/support/retry.js';
import { FakeClock } from '../helpers/fake-clock.js';

const policy: RetryPolicy = { maxAttempts: 4, baseDelayMs: 100, maxDelayMs: 1_000 };

class Transient extends Error {}

describe('backoffDelay', () => {
  it('doubles per attempt, stays within [half, full] of the exponential delay, and is capped', () => {
    expect(backoffDelay(1, policy, () => 0)).toBe(50);
    expect(backoffDelay(1, policy, () => 1)).toBe(100);
    expect(backoffDelay(3, policy, () => 1)).toBe(400);
    expect(backoffDelay(10, policy, () => 1)).toBe(1_000);
    expect(backoffDelay(10, policy, () => 0)).toBe(500);
  });
});

describe('retry', () => {
  it('retries retryable failures with growing delays until success', async () => {
    const clock = new FakeClock();
    const delays: number[] = [];
    let calls = 0;
    const result = retry(
      async () => {
        calls++;
        if (calls < 3) throw new Transient('busy');
        return 'done';
      },
      {
        policy,
        clock,
        random: () => 1,
        classify: (error) => ({ retry: error instanceof Transient }),
        onRetry: ({ delayMs }) => delays.push(delayMs),
      },
    );
    await clock.advance(10_000);
    await expect(result).resolves.toBe('done');
    expect(calls).toBe(3);
    expect(delays).toEqual([100, 200]);
  });

  it('gives up after maxAttempts and rethrows the last failure', async () => {
    const clock = new FakeClock();
    let calls = 0;
    const result = retry(
      async () => {
        calls++;
        throw new Transient(`failure ${calls}`);
      },
      { policy, clock, classify: () => ({ retry: true }) },
    );
    const settled = result.catch((error: unknown) => error);
    await clock.advance(60_000);
    expect(((await settled) as Error).message).toBe('failure 4');
    expect(calls).toBe(4);
  });

  it('does not retry what the classifier calls final', async () => {
    const clock = new FakeClock();
    let calls = 0;
    await expect(
      retry(
        async () => {
          calls++;
          throw new Error('400 bad request');
        },
        { policy, clock, classify: () => ({ retry: false }) },
      ),
    ).rejects.toThrow('400 bad request');
    expect(calls).toBe(1);
  });

  it('waits at least what the server asked for (Retry-After)', async () => {
    const clock = new FakeClock();
    let calls = 0;
    const delays: number[] = [];
    const result = retry(
      async () => {
        if (++calls === 1) throw new Transient('429');
        return clock.now();
      },
      {
        policy,
        clock,
        random: () => 0,
        classify: () => ({ retry: true, atLeastMs: 7_000 }),
        onRetry: ({ delayMs }) => delays.push(delayMs),
      },
    );
    const start = clock.now();
    await clock.advance(6_999);
    expect(calls).toBe(1);
    await clock.advance(1);
    expect((await result) - start).toBe(7_000);
    expect(delays).toEqual([7_000]);
  });

  it('free retries (an outage waited out) do not use up attempts', async () => {
    const clock = new FakeClock();
    let calls = 0;
    const result = retry(
      async () => {
        if (++calls <= 10) throw new Transient('connection refused');
        return calls;
      },
      { policy, clock, classify: () => ({ retry: true, free: true }) },
    );
    await expect(result).resolves.toBe(11);
  });

  it('stops waiting when the signal aborts', async () => {
    const clock = new FakeClock();
    const controller = new AbortController();
    const result = retry(
      async () => {
        throw new Transient('busy');
      },
      { policy, clock, signal: controller.signal, classify: () => ({ retry: true }) },
    );
    const settled = result.catch((error: unknown) => error);
    await clock.advance(1);
    controller.abort();
    expect(((await settled) as Error).name).toBe('AbortError');
  });
});
