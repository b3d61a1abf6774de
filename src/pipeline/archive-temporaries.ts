/**
 * Whether the archive may hold temporaries of a cross-device copy (archive.ts), so that a start
 * walks the archive for them only when it may. Looking means listing every folder of the archive:
 * a second for 100,000 archived files in 10,000 folders here, minutes on a NAS's spinning disk,
 * at every start.
 *
 * A stamp in the state folder says "this archive holds none of our temporaries". It is written
 * after a walk and at the end of a run in which every temporary made was removed again. Before a
 * run makes its first temporary it removes the stamp and syncs the folder, so a crash, a power cut
 * or a temporary that could not be removed leaves no stamp, and the next start walks.
 */
import { closeSync, fsyncSync, openSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { readStateFile, writeStateFile } from '../support/state-file.js';
import { folderFsyncUnsupported, removeStaleTemporaries, type ArchiveFs } from './archive.js';

const STAMP_FILE = 'archive-clean.json';

/** Makes a folder's entries durable (fsync of the folder itself). */
export type SyncFolder = (path: string) => void;

/** The real folder sync, synchronous: for the few calls where waiting on the main thread costs nothing. */
export const syncFolderNow: SyncFolder = (path) => {
  const folder = openSync(path, 'r');
  try {
    fsyncSync(folder);
  } finally {
    closeSync(folder);
  }
};

export class ArchiveTemporaries {
  readonly #stateDirectory: string;
  readonly #archiveDirectory: string;
  readonly #syncFolder: SyncFolder;
  /** Temporaries this run made that are not known to be gone (copy destinations). */
  readonly #alive = new Set<string>();
  /** Whether the stamp is known to be gone for good (removed before this run's first copy). */
  #unstamped = false;

  /** `syncFolder`: how the state folder is synced after the stamp's removal (tests simulate file systems). */
  constructor(stateDirectory: string, archiveDirectory: string, syncFolder: SyncFolder = syncFolderNow) {
    this.#stateDirectory = stateDirectory;
    this.#archiveDirectory = archiveDirectory;
    this.#syncFolder = syncFolder;
  }

  /**
   * At start, before anything is archived: removes temporaries left in the archive, unless the
   * stamp says there are none. Returns how many were removed; `undefined` when the walk was not
   * needed.
   */
  async removeLeftovers(): Promise<number | undefined> {
    if (this.#stamped()) return undefined;
    const removed = await removeStaleTemporaries(this.#archiveDirectory);
    this.#stamp();
    return removed;
  }

  /**
   * `base` with the temporaries it makes tracked: a copy (archive.ts copies only to make a
   * temporary) first removes the stamp; an unlink or rename of the temporary ends its tracking.
   */
  track(base: ArchiveFs): ArchiveFs {
    return {
      ...base,
      copyFile: async (source, destination, mode) => {
        this.#alive.add(destination);
        if (!this.#unstamped) {
          this.#removeStamp();
          this.#unstamped = true;
        }
        await base.copyFile(source, destination, mode);
      },
      rename: async (from, to) => {
        await base.rename(from, to);
        this.#alive.delete(from);
      },
      unlink: async (path) => {
        try {
          await base.unlink(path);
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code === 'ENOENT') this.#alive.delete(path);
          throw error;
        }
        this.#alive.delete(path);
      },
    };
  }

  /** At the end of a run, once no file is in work: stamps the archive if no temporary is left. */
  finish(): void {
    if (this.#alive.size > 0) return;
    this.#stamp();
    // A copy after this (none is expected) removes the stamp again.
    this.#unstamped = false;
  }

  #stamped(): boolean {
    // None, or unreadable: walk.
    const stamp = readStateFile(this.#stateDirectory, STAMP_FILE) as { archive?: unknown } | undefined;
    return stamp?.archive === this.#archiveDirectory;
  }

  /** Best effort: without the stamp, the next start walks the archive, which is only slower. */
  #stamp(): void {
    writeStateFile(this.#stateDirectory, STAMP_FILE, { archive: this.#archiveDirectory, at: new Date().toISOString() });
  }

  /**
   * Removes the stamp for good (the folder synced) before a temporary may exist; throws if it
   * cannot, and the copy does not start. Once per run, so the synchronous calls cost nothing.
   */
  #removeStamp(): void {
    try {
      unlinkSync(join(this.#stateDirectory, STAMP_FILE));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      return;
    }
    try {
      this.#syncFolder(this.#stateDirectory);
    } catch (error) {
      // Where folders cannot be synced, the removal is as durable as that platform makes it.
      if (!folderFsyncUnsupported(error)) throw error;
    }
  }
}
