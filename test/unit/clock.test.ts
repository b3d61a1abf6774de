import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { eitherSignal } from '../../src/support/clock.js';

describe('eitherSignal', () => {
  it('aborts with the reason of whichever input aborts first', () => {
    for (const which of ['a', 'b'] as const) {
      const a = new AbortController();
      const b = new AbortController();
      const { signal } = eitherSignal(a.signal, b.signal);
      const reason = new Error(`${which} stopped`);
      (which === 'a' ? a : b).abort(reason);
      expect(signal.aborted).toBe(true);
      expect(signal.reason).toBe(reason);
    }
  });

  it('is aborted at once when an input already is, and is the other input when one is missing', () => {
    const stopped = AbortSignal.abort(new Error('already'));
    expect(eitherSignal(stopped, new AbortController().signal).signal.reason).toEqual(new Error('already'));
    const only = new AbortController().signal;
    expect(eitherSignal(undefined, only).signal).toBe(only);
  });

  it('leaves no listener on a long-lived input once released, however often it is combined', () => {
    const longLived = new AbortController();
    for (let i = 0; i < 1_000; i++) {
      const other = new AbortController();
      const { release } = eitherSignal(longLived.signal, other.signal);
      if (i % 2 === 0) other.abort();
      release();
      expect(getEventListeners(other.signal, 'abort')).toHaveLength(0);
    }
    expect(getEventListeners(longLived.signal, 'abort')).toHaveLength(0);
  });
});
