import type { FileRow, Journal } from '../journal/journal.js';
import { FINAL_STATES, type FileState } from '../pipeline/states.js';
import { formatBytes } from '../pipeline/stats.js';
import { lastedMs, type Problem } from '../support/problems.js';
import { formatDuration } from './health.js';

/** What `status` shows; `--json` prints exactly this. */
export interface StatusReport {
  journal: string;
  /** Whether a daemon holds the journal right now. */
  running: boolean;
  /** What keeps the running uploader from its work now (empty when none runs). */
  problems: Problem[];
  /** Files per state (the newest version of each path). */
  counts: Partial<Record<FileState, number>>;
  /** Files not in a final state. */
  inProgress: number;
  totals: { today: Totals; ever: Totals };
  failed: { path: string; error: string | null; attempts: number; nextRetryAt: string | null }[];
  /** `error`: why it failed, was skipped or left in place. */
  recent: { path: string; state: FileState; bytes: number; at: string; assetId: string | null; archivePath: string | null; error: string | null }[];
}

interface Totals {
  files: number;
  bytes: number;
}

export function buildStatus(input: {
  journal: Journal;
  file: string;
  running: boolean;
  problems: Problem[];
  now: Date;
  recent: number;
}): StatusReport {
  const { journal, now } = input;
  const counts = journal.counts();
  const inProgress = Object.entries(counts)
    .filter(([state]) => !FINAL_STATES.includes(state as FileState))
    .reduce((sum, [, count]) => sum + count, 0);
  const midnight = new Date(now.getFullYear(), now.getMonth(), now.getDate()).getTime();
  return {
    journal: input.file,
    running: input.running,
    problems: input.running ? input.problems : [],
    counts: Object.fromEntries(Object.entries(counts).filter(([, count]) => count > 0)),
    inProgress,
    totals: { today: journal.totals(midnight), ever: journal.totals() },
    failed: journal.failed().map((row) => ({
      path: row.path,
      error: row.error,
      attempts: row.attempts,
      nextRetryAt: row.nextRetryAt === null ? null : new Date(row.nextRetryAt).toISOString(),
    })),
    recent: journal.recent(input.recent).map((row) => ({
      path: row.path,
      state: row.state,
      bytes: row.size,
      at: new Date(row.updatedAt).toISOString(),
      assetId: row.assetId,
      archivePath: row.archivePath,
      error: row.error,
    })),
  };
}

/** `now` and `uptime` (`os.uptime()`): the reader's times, for how long a problem lasts. */
export function formatStatus(report: StatusReport, now: Date, uptime: number): string {
  const lines: string[] = [];
  lines.push(`journal: ${report.journal} (${report.running ? 'an uploader is running' : 'no uploader running'})`);
  for (const problem of report.problems) {
    lines.push(`now: ${problem.message} (for ${formatDuration(lastedMs(problem, now.getTime(), uptime))}, since ${problem.since})`);
  }
  const counts = Object.entries(report.counts).map(([state, count]) => `${count} ${state}`);
  lines.push(`files: ${counts.length > 0 ? counts.join(', ') : 'none yet'}`);
  const { today, ever } = report.totals;
  lines.push(
    `uploaded: today ${today.files} file(s), ${formatBytes(today.bytes)}; ever ${ever.files} file(s), ${formatBytes(ever.bytes)}`,
  );
  if (report.failed.length > 0) {
    lines.push(`failed (${report.failed.length}):`);
    for (const failure of report.failed) {
      const next = failure.nextRetryAt ? `next try ${failure.nextRetryAt}` : 'tried again when it changes, after a restart, or with `retry`';
      lines.push(`  ${failure.path}: ${failure.error ?? 'unknown error'} (${failure.attempts} attempt(s); ${next})`);
    }
  }
  if (report.recent.length > 0) {
    lines.push(`last ${report.recent.length}:`);
    for (const row of report.recent) {
      const where = row.archivePath ? ` -> ${row.archivePath}` : row.error ? ` (${row.error})` : '';
      lines.push(`  ${row.at}  ${row.state.padEnd(8)}  ${row.path}${where}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

/**
 * What `history` looks for: the asset id in the address of a photo's page in Immich
 * (`https://immich.example/photos/<id>`, also within an album or a search), or the query as given.
 */
export function historyQuery(text: string): string {
  return /\/photos\/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\b/i.exec(text)?.[1]?.toLowerCase() ?? text;
}

/** `history`: where a file went and when. */
export function formatHistory(entries: ReturnType<Journal['history']>, query: string): string {
  if (entries.length === 0) return `no file in the journal matches "${query}"\n`;
  const lines: string[] = [];
  for (const { file, transitions } of entries) {
    lines.push(`${file.path} (${formatBytes(file.size)}): ${describeOutcome(file)}`);
    for (const step of transitions) {
      const detail = Object.entries(step.detail)
        .filter(([, value]) => value !== null && value !== undefined)
        .map(([key, value]) => `${key}=${detailValue(value)}`)
        .join(' ');
      lines.push(`  ${new Date(step.at).toISOString()}  ${step.state.padEnd(10)}${detail ? `  ${detail}` : ''}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

function describeOutcome(row: FileRow): string {
  switch (row.state) {
    case 'archived':
      return `on the server (asset ${row.assetId ?? '?'}), original archived to ${row.archivePath ?? '?'}`;
    case 'deleted':
      return `on the server (asset ${row.assetId ?? '?'}), original deleted`;
    case 'kept':
      return `on the server (asset ${row.assetId ?? '?'}), original ${row.error ?? 'kept in place'}`;
    case 'failed':
      return `failed: ${row.error ?? 'unknown error'}`;
    case 'skipped':
      return 'skipped (left in place)';
    case 'gone':
      return 'disappeared before it was uploaded';
    default:
      return `in progress (${row.state})`;
  }
}

/** A transition's detail value as one word: a file (a sidecar sent) by its path. */
function detailValue(value: unknown): string {
  if (typeof value !== 'object' || value === null) return String(value);
  const { path } = value as { path?: unknown };
  return typeof path === 'string' ? path : JSON.stringify(value);
}
