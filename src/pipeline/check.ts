import type { Clock } from '../support/clock.js';
import type { BulkCheckItem, BulkCheckResult } from '../immich/client.js';

/** What the server said about one checksum. */
export type ServerVerdict =
  | { kind: 'accept' }
  /** `trashed`: the server's copy is in the user's trash, where Immich deletes it after a while. */
  | { kind: 'duplicate'; assetId: string | undefined; trashed: boolean }
  | { kind: 'unsupported' };

interface Waiter {
  resolve: (verdict: ServerVerdict) => void;
  reject: (error: Error) => void;
}

/**
 * Asks the server which checksums it already has, many files per call: checks that arrive
 * within `windowMs` of each other (or `maxBatch` of them) share one
 * `POST /api/assets/bulk-upload-check`. A file the server already has is never uploaded.
 */
export class CheckBatcher {
  private pending = new Map<string, Waiter[]>();
  private flushScheduled = false;

  constructor(
    private readonly deps: {
      send: (items: BulkCheckItem[]) => Promise<BulkCheckResult[]>;
      clock: Clock;
      /** How long to gather checks before sending; default 10 ms. */
      windowMs?: number;
      /** The official CLI sends up to 5,000 a call; default 1,000. */
      maxBatch?: number;
    },
  ) {}

  check(checksum: string): Promise<ServerVerdict> {
    return new Promise<ServerVerdict>((resolve, reject) => {
      const waiters = this.pending.get(checksum);
      if (waiters) waiters.push({ resolve, reject });
      else this.pending.set(checksum, [{ resolve, reject }]);
      if (this.pending.size >= (this.deps.maxBatch ?? 1_000)) void this.flush();
      else this.scheduleFlush();
    });
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    // flush() never rejects: a failed call rejects each waiter instead.
    void this.deps.clock.sleep(this.deps.windowMs ?? 10).then(() => this.flush());
  }

  private async flush(): Promise<void> {
    this.flushScheduled = false;
    if (this.pending.size === 0) return;
    const batch = this.pending;
    this.pending = new Map();
    // The checksum is the id: it is unique within the batch and echoed back by the server.
    const items = [...batch.keys()].map((checksum) => ({ id: checksum, checksum }));
    try {
      const results = await this.deps.send(items);
      const byId = new Map(results.map((result) => [result.id, result]));
      for (const [checksum, waiters] of batch) {
        const verdict = toVerdict(byId.get(checksum));
        for (const waiter of waiters) waiter.resolve(verdict);
      }
    } catch (error) {
      const failure = error instanceof Error ? error : new Error(String(error));
      for (const waiters of batch.values()) for (const waiter of waiters) waiter.reject(failure);
    }
  }
}

function toVerdict(result: BulkCheckResult | undefined): ServerVerdict {
  // A server that leaves an item out has not refused it: the upload itself will tell.
  if (!result || result.action === 'accept') return { kind: 'accept' };
  if (result.reason === 'duplicate') return { kind: 'duplicate', assetId: result.assetId, trashed: result.isTrashed === true };
  return { kind: 'unsupported' };
}
