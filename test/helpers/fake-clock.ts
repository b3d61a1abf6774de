import { abortReason, type Clock } from '../../src/support/clock.js';

/** One pending `sleep()`. */
interface Sleeper {
  /** Fake time at which it resolves. */
  due: number;
  /** Creation order: sleepers due at the same moment resolve in the order they were created. */
  order: number;
  resolve: () => void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

export interface FakeClockOptions {
  /** The starting time in ms since the epoch. Default: 2024-01-01T00:00:00Z. */
  start?: number;
  /**
   * How many `setImmediate` turns `advance()` waits after each sleeper it resolves (and before it
   * looks for the next one). Each turn drains the microtask queue and lets already-finished I/O
   * callbacks run, so code that awaits a few promises between two sleeps gets to its next `sleep()`
   * before time moves on. Default: 5.
   */
  turns?: number;
}

/**
 * A Clock whose time moves only when a test says so.
 *
 * - `now()` returns the fake time, and `monotonic()` the same until `jumpWall()` sets the system's
 *   time apart from it.
 * - `sleep(ms, signal?)` registers a sleeper due at `now() + ms` (also for `ms <= 0`: every sleep,
 *   even of 0 ms, waits for an `advance()`, so a loop can never spin on its own). An abort removes
 *   the sleeper and rejects with the signal's reason, like the system clock.
 * - `advance(ms)` moves time forward to `now() + ms`, resolving the sleepers that fall due in time
 *   order; after each one it waits a few event-loop turns, so a loop that sleeps, works and sleeps
 *   again advances one step per interval — sleepers created during `advance()` are resolved too if
 *   they fall due before the target time.
 *
 * Limits: "a few turns" is enough for promise chains and in-memory fakes. Real I/O done in libuv's
 * thread pool (fs calls) may take longer than the turns allow; tests of such code should inject a
 * fake (e.g. a stat function) or wait on a condition with `waitFor()` before advancing further.
 * `advance()` calls must not overlap (await each one); an overlapping call throws.
 */
export class FakeClock implements Clock {
  /** Monotonic time, which sleepers wait on; `now()` adds the wall clock's jumps to it. */
  #now: number;
  #wallOffset = 0;
  readonly #turns: number;
  #sleepers: Sleeper[] = [];
  #order = 0;
  #advancing = false;

  constructor(options: FakeClockOptions = {}) {
    this.#now = options.start ?? Date.UTC(2024, 0, 1);
    this.#turns = options.turns ?? 5;
  }

  now(): number {
    return this.#now + this.#wallOffset;
  }

  monotonic(): number {
    return this.#now;
  }

  /**
   * Sets the system's time forward (or back, with a negative `ms`), as NTP does: `now()` jumps,
   * `monotonic()` and the sleepers do not move.
   */
  jumpWall(ms: number): void {
    this.#wallOffset += ms;
  }

  /** How many sleeps are waiting for time to move on. */
  get pendingSleepers(): number {
    return this.#sleepers.length;
  }

  /** When the earliest pending sleeper falls due, or undefined when none is waiting. */
  get nextDue(): number | undefined {
    return this.#earliest()?.due;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) {
        reject(abortReason(signal));
        return;
      }
      const sleeper: Sleeper = {
        due: this.#now + Math.max(0, ms),
        order: this.#order++,
        resolve,
        signal,
        onAbort: undefined,
      };
      if (signal) {
        sleeper.onAbort = () => {
          this.#remove(sleeper);
          reject(abortReason(signal));
        };
        signal.addEventListener('abort', sleeper.onAbort, { once: true });
      }
      this.#sleepers.push(sleeper);
    });
  }

  /**
   * Moves time forward by `ms` (0 is allowed: it resolves what is already due), resolving due
   * sleepers one at a time in time order and letting the code they wake run before the next one.
   */
  async advance(ms: number): Promise<void> {
    if (!(ms >= 0)) throw new RangeError(`advance expects a duration >= 0 ms, got ${ms}`);
    if (this.#advancing) throw new Error('FakeClock.advance() called while another advance() is running; await it first');
    this.#advancing = true;
    try {
      const target = this.#now + ms;
      // Let code that is about to sleep (a loop just started, a promise chain in flight) register
      // its sleeper before we decide what is due.
      await this.flush();
      for (;;) {
        const next = this.#earliest();
        if (!next || next.due > target) break;
        this.#now = Math.max(this.#now, next.due);
        this.#remove(next);
        next.resolve();
        await this.flush();
      }
      this.#now = target;
      await this.flush();
    } finally {
      this.#advancing = false;
    }
  }

  /**
   * Advances exactly to the earliest pending sleeper and resolves it (and any due at the same
   * moment). Returns false when nothing is waiting.
   */
  async advanceToNext(): Promise<boolean> {
    const due = this.nextDue;
    if (due === undefined) return false;
    await this.advance(Math.max(0, due - this.#now));
    return true;
  }

  /** Waits the configured number of event-loop turns without moving time. */
  async flush(): Promise<void> {
    for (let turn = 0; turn < this.#turns; turn++) {
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  #earliest(): Sleeper | undefined {
    let best: Sleeper | undefined;
    for (const sleeper of this.#sleepers) {
      if (!best || sleeper.due < best.due || (sleeper.due === best.due && sleeper.order < best.order)) best = sleeper;
    }
    return best;
  }

  #remove(sleeper: Sleeper): void {
    const index = this.#sleepers.indexOf(sleeper);
    if (index !== -1) this.#sleepers.splice(index, 1);
    if (sleeper.signal && sleeper.onAbort) sleeper.signal.removeEventListener('abort', sleeper.onAbort);
  }
}
