import { describe, expect, it } from 'vitest';
import type { BulkCheckItem, BulkCheckResult } from '../../src/immich/client.js';
import { CheckBatcher } from '../../src/pipeline/check.js';
import { FakeClock } from '../helpers/fake-clock.js';

const A = 'a'.repeat(40);
const B = 'b'.repeat(40);
const C = 'c'.repeat(40);
const D = 'd'.repeat(40);

describe('CheckBatcher', () => {
  it('sends checks made within the window as one call, and answers each', async () => {
    const clock = new FakeClock();
    const calls: BulkCheckItem[][] = [];
    const batcher = new CheckBatcher({
      clock,
      windowMs: 10,
      send: async (items) => {
        calls.push(items);
        return items.map((item): BulkCheckResult =>
          item.checksum === B
            ? { id: item.id, action: 'reject', reason: 'duplicate', assetId: 'asset-b', isTrashed: false }
            : item.checksum === C
              ? { id: item.id, action: 'reject', reason: 'unsupported-format' }
              : item.checksum === D
                ? { id: item.id, action: 'reject', reason: 'duplicate', assetId: 'asset-d', isTrashed: true }
                : { id: item.id, action: 'accept' },
        );
      },
    });
    const answers = Promise.all([batcher.check(A), batcher.check(B), batcher.check(C), batcher.check(A), batcher.check(D)]);
    await clock.advance(10);
    expect(await answers).toEqual([
      { kind: 'accept' },
      { kind: 'duplicate', assetId: 'asset-b', trashed: false },
      { kind: 'unsupported' },
      { kind: 'accept' },
      { kind: 'duplicate', assetId: 'asset-d', trashed: true },
    ]);
    expect(calls).toHaveLength(1);
    expect(calls[0]?.map((item) => item.checksum)).toEqual([A, B, C, D]);
  });

  it('sends at once when the batch is full, without waiting for the window', async () => {
    const clock = new FakeClock();
    let calls = 0;
    const batcher = new CheckBatcher({
      clock,
      maxBatch: 2,
      send: async (items) => {
        calls++;
        return items.map((item): BulkCheckResult => ({ id: item.id, action: 'accept' }));
      },
    });
    await expect(Promise.all([batcher.check(A), batcher.check(B)])).resolves.toHaveLength(2);
    expect(calls).toBe(1);
  });

  it('rejects every waiter of a failed call', async () => {
    const clock = new FakeClock();
    const batcher = new CheckBatcher({
      clock,
      send: async () => {
        throw new Error('server down');
      },
    });
    const answers = [batcher.check(A), batcher.check(B)].map((p) => p.catch((error: Error) => error.message));
    await clock.advance(100);
    expect(await Promise.all(answers)).toEqual(['server down', 'server down']);
  });
});
