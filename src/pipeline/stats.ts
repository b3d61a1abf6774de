/** Counts of what a run did, for the periodic and final summary lines. */
export class RunStats {
  uploaded = 0;
  uploadedBytes = 0;
  duplicates = 0;
  skipped = 0;
  /** Files whose last try failed: each counts once, however often it was tried, and no more once it goes through. */
  failed = 0;
  /** Files on the server whose originals are left in place now, as their folder cannot be written to. */
  left = 0;
  /** Files stopped on their way by a shutdown: they stay where they are, for the next run. */
  interrupted = 0;
  /** Files the journal already knew as done (keep mode): no hash, no server call. */
  unchanged = 0;
  /** Files read to compute their checksum: what a restart in keep mode should not do again. */
  hashed = 0;
  /** As at the start: a daemon that had nothing to do says nothing. */
  private lastReported = JSON.stringify(this.snapshot(0));

  snapshot(queued: number): StatsSnapshot {
    return {
      uploaded: this.uploaded,
      uploadedBytes: this.uploadedBytes,
      duplicates: this.duplicates,
      skipped: this.skipped,
      failed: this.failed,
      left: this.left,
      interrupted: this.interrupted,
      unchanged: this.unchanged,
      hashed: this.hashed,
      queued,
    };
  }

  /** True when something happened since the last call: quiet logs when all is still. */
  changedSinceLastReport(queued: number): boolean {
    const key = JSON.stringify(this.snapshot(queued));
    const changed = key !== this.lastReported;
    this.lastReported = key;
    return changed;
  }
}

export interface StatsSnapshot {
  uploaded: number;
  uploadedBytes: number;
  duplicates: number;
  skipped: number;
  failed: number;
  left: number;
  interrupted: number;
  unchanged: number;
  hashed: number;
  queued: number;
  /** At the end of a run: folders that could not be read, whose files were not seen. */
  unreadable?: number;
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

export function formatSummary(s: StatsSnapshot): string {
  return (
    `${s.uploaded} uploaded (${formatBytes(s.uploadedBytes)}), ${s.duplicates} already on server, ` +
    `${s.skipped} skipped, ${s.failed} failed, ${s.queued} queued` +
    (s.left > 0 ? `, ${s.left} left in place as their folder cannot be written to` : '') +
    (s.interrupted > 0 ? `, ${s.interrupted} stopped on their way (they stay for the next run)` : '') +
    (s.unchanged > 0 ? `, ${s.unchanged} unchanged since they were kept` : '') +
    ((s.unreadable ?? 0) > 0 ? `, ${s.unreadable} folder(s) could not be read` : '')
  );
}
