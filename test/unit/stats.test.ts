import { describe, expect, it } from 'vitest';
import { formatSummary, RunStats } from '../../src/pipeline/stats.js';

describe('RunStats', () => {
  it('has nothing to report for a daemon that had nothing to do, and reports each change once', () => {
    const stats = new RunStats();
    expect(stats.changedSinceLastReport(0)).toBe(false);
    stats.uploaded++;
    expect(stats.changedSinceLastReport(0)).toBe(true);
    expect(stats.changedSinceLastReport(0)).toBe(false);
    expect(stats.changedSinceLastReport(2)).toBe(true);
  });

  it('names files left in place and folders not read only when there are some', () => {
    const stats = new RunStats();
    expect(formatSummary(stats.snapshot(0))).toBe('0 uploaded (0 B), 0 already on server, 0 skipped, 0 failed, 0 queued');
    stats.left = 2;
    expect(formatSummary({ ...stats.snapshot(0), unreadable: 1 })).toBe(
      '0 uploaded (0 B), 0 already on server, 0 skipped, 0 failed, 0 queued, 2 left in place as their folder cannot be written to, 1 folder(s) could not be read',
    );
  });
});
