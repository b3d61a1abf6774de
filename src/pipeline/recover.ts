import { lstat } from 'node:fs/promises';
import { relative } from 'node:path';
import type { Logger } from 'pino';
import type { AfterUpload, WatchRoot } from '../config.js';
import { isInside } from '../support/paths.js';
import { describeDisposition, disposeOriginal, finishInterrupted, type ConfirmedFile, type Disposition } from './after-upload.js';
import { SourceChangedError, type ArchiveFs } from './archive.js';
import { hashFile } from './hash.js';
import type { SentSidecar } from './sidecar.js';
import type { FileState, Recorder } from './states.js';
import { sameVersion, type FileVersion } from './types.js';

/** A journal row that never reached a final state: where a crash left a file. */
export interface UnfinishedRow extends FileVersion {
  path: string;
  state: FileState;
  checksum: string | null;
  /** The sidecar our upload sent with it (recorded with `on-server`). */
  sidecar?: SentSidecar | undefined;
}

export interface RecoverySummary {
  /** Moves and deletions finished, and confirmed uploads archived without a new upload. */
  finished: number;
  /** Files still in place that go through the pipeline again (hash, server check, ...). */
  resumed: number;
  /** Files that are no longer there. */
  gone: number;
  /** Files still there whose folder is no longer watched: left where they are. */
  unwatched: number;
}

/**
 * Resumes what a crash, power cut or kill interrupted, before anything new starts:
 * - `archiving`/`deleting`: the move or deletion is completed (or found completed);
 * - `on-server`: the server confirmed it, so it is archived (deleted, kept) without uploading;
 * - earlier states: the file is still in the watch folder and the scan sends it through the
 *   pipeline again; an interrupted upload is then answered by the server's duplicate check.
 * Leftover temporaries of a cross-device copy are removed separately (removeStaleTemporaries).
 */
export async function recoverUnfinished(deps: {
  rows: readonly UnfinishedRow[];
  roots: readonly WatchRoot[];
  afterUpload: AfterUpload;
  record: Recorder;
  logger: Logger;
  archiveFs?: ArchiveFs;
}): Promise<RecoverySummary> {
  const { rows, roots, afterUpload, record, logger, archiveFs } = deps;
  const summary: RecoverySummary = { finished: 0, resumed: 0, gone: 0, unwatched: 0 };
  for (const row of rows) {
    const root = roots.find((candidate) => isInside(row.path, candidate.path));
    const present = await versionOf(row.path);
    const unchanged = sameVersion(present, row);
    if (!root && present !== null) {
      // WATCH_DIRECTORIES no longer names its folder: no scan will find it, and it would be
      // "to redo" at every start. It stays where it is; on the server already, it is `kept`.
      const onServer = row.state === 'on-server' || row.state === 'archiving' || row.state === 'deleting';
      record(row, onServer ? 'kept' : 'skipped', { reason: 'left in place: its folder is no longer watched' });
      summary.unwatched++;
      continue;
    }
    try {
      // The journal knows the version, not the file: another one of the same size and mtime put
      // in its place while the uploader was down (a sync tool) was never uploaded. Its bytes tell.
      const confirmed = row.state === 'archiving' || row.state === 'deleting' || row.state === 'on-server';
      if (confirmed && unchanged && row.checksum && (await hashFile(row.path)).checksum !== row.checksum.toLowerCase()) {
        summary.resumed++;
        continue;
      }
      if ((row.state === 'archiving' || row.state === 'deleting' || row.state === 'on-server') && root && row.checksum) {
        const file: ConfirmedFile = { path: row.path, size: row.size, mtimeMs: row.mtimeMs, root, checksum: row.checksum };
        if (row.sidecar) file.sidecar = row.sidecar;
        if (row.state === 'on-server') {
          if (unchanged) {
            finished(logger, row.path, root, await disposeOriginal(file, afterUpload, record, archiveFs));
            summary.finished++;
            continue;
          }
        } else {
          const result = await finishInterrupted(file, row.state, record, archiveFs);
          if (result === 'lost') {
            logger.error({ file: row.path }, `${row.path} was being archived, but neither it nor an archived copy exists any more`);
            record(row, 'gone', { error: 'neither the original nor an archived copy was found after a restart' });
            summary.gone++;
          } else {
            finished(logger, row.path, root, result);
            summary.finished++;
          }
          continue;
        }
      }
      if (present === null) {
        record(row, 'gone');
        summary.gone++;
      } else {
        // Still there: the scan finds it and the pipeline takes it from the start.
        summary.resumed++;
      }
    } catch (error) {
      if (error instanceof SourceChangedError) {
        summary.resumed++;
        continue;
      }
      throw error;
    }
  }
  if (rows.length > 0) {
    const unwatched = summary.unwatched > 0 ? `, ${summary.unwatched} left in a folder no longer watched` : '';
    logger.info(
      summary,
      `went on with what the last run left unfinished: ${summary.finished} finished, ${summary.resumed} taken up again (the server is asked before anything is sent), ${summary.gone} gone${unwatched}`,
    );
  }
  return summary;
}

/** The one line a file gets, as in a run: it was on the server, and what was left to do is done now. */
function finished(logger: Logger, path: string, root: WatchRoot, disposition: Disposition): void {
  const file = relative(root.path, path);
  logger.info({ file, ...(disposition.mode === 'move' ? { archivedTo: disposition.archivedTo } : {}) }, `finished ${file}, which the last run had uploaded${describeDisposition(disposition)}`);
}

async function versionOf(path: string): Promise<FileVersion | null> {
  try {
    const stats = await lstat(path);
    return stats.isFile() ? { size: stats.size, mtimeMs: stats.mtimeMs } : null;
  } catch {
    return null;
  }
}

/**
 * Records as gone the failed files that are no longer there (deleted by hand, or in a folder no
 * longer watched), so that `status` does not list them as failed for good. Returns how many.
 */
export async function forgetVanishedFailures(rows: readonly (FileVersion & { path: string })[], record: Recorder): Promise<number> {
  let forgotten = 0;
  for (const row of rows) {
    if ((await versionOf(row.path)) !== null) continue;
    record(row, 'gone', { reason: 'no longer there' });
    forgotten++;
  }
  return forgotten;
}
