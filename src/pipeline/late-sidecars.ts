/**
 * Late sidecars: an `.xmp` that appears only after its photo went (a copy or a sync tool
 * delivering it after the photo settled). A photo's own pass sends and moves the sidecars it finds
 * when it is read; one that arrives later would stay in the watch folder for good. Immich takes a
 * sidecar only with a new upload, so it cannot follow its photo to the server now: in move mode
 * it follows the photo into the archive, and in delete mode it stays where it is, with a warning,
 * since what it holds is nowhere else.
 */
import { basename, dirname } from 'node:path';
import type { Logger } from 'pino';
import type { FileRow } from '../journal/journal.js';
import type { Clock } from '../support/clock.js';
import { messageOf } from '../support/message.js';
import { Waiters } from '../support/waiters.js';
import { isInside } from '../support/paths.js';
import { moveSidecar } from './after-upload.js';
import { currentVersion, type ArchiveFs } from './archive.js';
import { Settler } from './settle.js';
import { isSidecarOf, sharesStem, sidecarNames, stemOf, withoutExtension } from './sidecar.js';
import { isFinal } from './states.js';
import { sameVersion, type Candidate, type SettledFile } from './types.js';

/**
 * How long after its photo went a sidecar still counts as the photo's. Camera counters come round
 * (IMG_0001.JPG again, ten thousand shots later): a sidecar arriving ahead of a new photo of an
 * old name must not follow the old one into the archive.
 */
export const LATE_SIDECAR_WINDOW_MS = 24 * 60 * 60_000;

/** Why a late sidecar cannot go to the server, for the log. */
const NO_LATE_SIDECARS = 'Immich takes a sidecar only with a new upload of its photo';

/** How long a sidecar whose move failed is left alone before the next sighting tries again. */
const RETRY_MS = 60 * 60_000;

/** What to do with a settled sidecar. */
export type LateSidecarVerdict =
  /** A photo of its name is in the folder or on its way: that photo's pass takes the sidecar. */
  | { kind: 'wait' }
  /** Its photo went to the archive lately: it follows it there. */
  | { kind: 'follow'; photo: string; archivedTo: string }
  /**
   * Its photo went lately, and not to the archive: it stays, with a warning. `wasThere`: the
   * server had the photo already, so the sidecar may have been there all along.
   */
  | { kind: 'stays'; photo: string; wasThere?: true }
  /** No photo of its name went lately: not the uploader's business (yet). */
  | { kind: 'none' };

/**
 * Judges a settled sidecar from the journal's newest rows of the paths its photos may have had
 * ({@link isSidecarOf}) and, only when one of them went lately, the names in its folder.
 */
export async function judgeLateSidecar(
  sidecar: string,
  rows: readonly FileRow[],
  now: number,
  afterUpload: 'move' | 'delete',
  listFolder: () => Promise<readonly string[]>,
): Promise<LateSidecarVerdict> {
  const photos = rows.filter((row) => isSidecarOf(sidecar, row.path));
  if (photos.some((row) => !isFinal(row.state))) return { kind: 'wait' };
  const went = photos.find((row) => (row.state === 'archived' || row.state === 'deleted') && now - row.updatedAt <= LATE_SIDECAR_WINDOW_MS);
  if (!went) return { kind: 'none' };
  // A new photo of the name (the same name again, say) takes the sidecar with it. Compared
  // without case, as the folder may be on a file system that ignores it.
  const base = stemOf(basename(sidecar));
  const photoThere = (await listFolder()).some((name) => name.toLowerCase() === base || sharesStem(name, base));
  if (photoThere) return { kind: 'wait' };
  if (went.state === 'archived' && went.archivePath !== null && afterUpload === 'move') {
    return { kind: 'follow', photo: went.path, archivedTo: went.archivePath };
  }
  return { kind: 'stays', photo: went.path, ...(went.serverStatus === 'duplicate' ? { wasThere: true as const } : {}) };
}

export interface LateSidecarsOptions {
  clock: Clock;
  logger: Logger;
  /** The stability window and check interval, as for photos. */
  waitMs: number;
  intervalMs: number;
  afterUpload: 'move' | 'delete';
  /** The journal's newest rows of a stem (Journal.latestWithStem). */
  rowsWithStem: (stem: string) => FileRow[];
  /** Lists the sidecar's folder and moves it into the archive. */
  fs: ArchiveFs;
  /** ARCHIVE_DIRECTORY now: a photo archived elsewhere (before it changed) is not followed there. */
  archiveDirectory: string;
  /** Shows a path in log lines (relative to its watch folder). */
  display: (file: Candidate) => string;
  /** Called when a sidecar left the watch folder for the archive. */
  onMoved?: (file: Candidate) => void;
}

/**
 * Takes the sidecars the detector reports, lets each settle, and judges it: one that follows its
 * photo is moved, one that stays is warned about once per version, and any other is judged again
 * at its next sighting (a photo may come for it, or go without it).
 */
export class LateSidecars {
  readonly #options: LateSidecarsOptions;
  readonly #settler: Settler;
  /** Versions judged for good (or until `retryAt`, in `clock.monotonic()` time), by path: rescans see them again and again. */
  readonly #judged = new Map<string, { size: number; mtimeMs: number; retryAt: number }>();
  /** Sidecars that wait for a photo of theirs on its way, by path: judged again when one goes. */
  readonly #waiting = new Map<string, Candidate>();
  /** Paths settling or being judged. */
  readonly #inProgress = new Set<string>();
  readonly #work = new Set<Promise<void>>();
  readonly #idleWaiters = new Waiters();

  constructor(options: LateSidecarsOptions) {
    this.#options = options;
    this.#settler = new Settler({
      clock: options.clock,
      waitMs: options.waitMs,
      intervalMs: options.intervalMs,
      onSettled: (file) => this.#track(this.#handle(file)),
      onEmpty: (candidate) => this.#done(candidate.path),
      onGone: (path) => this.#done(path),
    });
  }

  start(): void {
    this.#settler.start();
  }

  /** A sidecar the detector saw; repeated sightings of a version judged already do nothing. */
  offer(candidate: Candidate): void {
    const judged = this.#judged.get(candidate.path);
    if (judged !== undefined && sameVersion(judged, candidate) && judged.retryAt > this.#options.clock.monotonic()) return;
    this.#inProgress.add(candidate.path);
    this.#settler.add(candidate);
  }

  /** A photo left the watch folder: the sidecars of it that waited are judged again now. */
  photoGone(photo: string): void {
    if (this.#waiting.size === 0) return;
    const { own, shared } = sidecarNames(photo);
    for (const path of [...own, ...shared]) {
      const sidecar = this.#waiting.get(path);
      if (sidecar === undefined) continue;
      this.#waiting.delete(path);
      this.offer(sidecar);
    }
  }

  /** Sidecars settling or being judged. */
  get pending(): number {
    return this.#inProgress.size;
  }

  /** Resolves when no sidecar is settling or being judged. */
  async whenIdle(): Promise<void> {
    while (this.#inProgress.size > 0) await this.#idleWaiters.next();
  }

  /** Stops settling and waits for the moves under way. */
  async close(): Promise<void> {
    await this.#settler.close();
    await Promise.all(this.#work);
  }

  async #handle(file: SettledFile): Promise<void> {
    const { clock, logger, fs, afterUpload } = this.#options;
    const shown = this.#options.display(file);
    try {
      const rows = this.#options.rowsWithStem(withoutExtension(file.path));
      const verdict = await judgeLateSidecar(file.path, rows, clock.now(), afterUpload, () => fs.readdir(dirname(file.path)));
      // Nothing to do now: judged again when the photo it waits for goes, or at its next sighting.
      if (verdict.kind === 'wait') this.#waiting.set(file.path, file);
      if (verdict.kind === 'wait' || verdict.kind === 'none') return;
      // Archived before ARCHIVE_DIRECTORY changed: that place may be a disk no longer mounted, or a
      // folder moved by hand, and a sidecar put there would be lost to view. It stays here.
      if (verdict.kind === 'follow' && !isInside(verdict.archivedTo, this.#options.archiveDirectory)) {
        this.#judged.set(file.path, { size: file.size, mtimeMs: file.mtimeMs, retryAt: Number.POSITIVE_INFINITY });
        logger.warn(
          { file: shown, photo: verdict.photo, archivedTo: verdict.archivedTo },
          `${shown} arrived after ${basename(verdict.photo)} went to the server, so Immich did not get it (${NO_LATE_SIDECARS}): ` +
            `it stays here, since its photo was archived to ${verdict.archivedTo}, outside ARCHIVE_DIRECTORY as it is now`,
        );
        return;
      }
      if (verdict.kind === 'follow') {
        const movedTo = await moveSidecar(file, file.root, verdict.photo, verdict.archivedTo, fs);
        this.#options.onMoved?.(file);
        logger.warn(
          { file: shown, photo: verdict.photo, archivedTo: movedTo },
          `${shown} arrived after ${basename(verdict.photo)} went to the server, so Immich did not get it (${NO_LATE_SIDECARS}): moved into the archive beside the photo, as ${movedTo}`,
        );
        return;
      }
      this.#judged.set(file.path, { size: file.size, mtimeMs: file.mtimeMs, retryAt: Number.POSITIVE_INFINITY });
      logger.warn(
        { file: shown, photo: verdict.photo },
        verdict.wasThere
          ? `${shown} stays here: ${basename(verdict.photo)} was on the server already, so this sidecar did not go with it (${NO_LATE_SIDECARS}), and what it holds may be nowhere else`
          : `${shown} arrived after ${basename(verdict.photo)} went to the server, so Immich did not get it (${NO_LATE_SIDECARS}): it stays here, since what it holds is nowhere else`,
      );
    } catch (error) {
      // Gone or changed meanwhile (its photo's own pass moved it, or it is being written to):
      // nothing to say, and a new version is judged at its own sighting.
      if (!sameVersion(await currentVersion(fs, file.path).catch(() => null), file)) return;
      this.#judged.set(file.path, { size: file.size, mtimeMs: file.mtimeMs, retryAt: clock.monotonic() + RETRY_MS });
      logger.warn({ file: shown, err: error }, `${shown} arrived after its photo went to the server, and could not follow it into the archive: ${messageOf(error)}`);
    } finally {
      this.#done(file.path);
    }
  }

  #track(work: Promise<void>): void {
    this.#work.add(work);
    void work.finally(() => this.#work.delete(work));
  }

  #done(path: string): void {
    // Seen again while it was judged: it is settling again.
    if (this.#settler.has(path) || !this.#inProgress.delete(path) || this.#inProgress.size > 0) return;
    this.#idleWaiters.wakeAll();
  }
}

