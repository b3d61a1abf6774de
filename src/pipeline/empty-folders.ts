/**
 * Emptied folders (REMOVE_EMPTY_FOLDERS): a sub-folder of a watch folder from which the uploader
 * took a file is removed once it has stayed empty for the stability window, and so is each parent
 * that leaves empty, up to the watch folder (never included). `rmdir` removes only an empty
 * folder, so a file put in meanwhile keeps it; a folder the uploader took nothing from is never
 * touched. What file browsers and NAS indexers leave in a folder (see {@link isLeftBehind})
 * counts as empty: it goes with the folder. The folders still waiting when the uploader stops are
 * kept in the state folder, and wait again at the next start.
 */
import { readdir, rm, rmdir } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import type { Logger } from 'pino';
import type { WatchRoot } from '../config.js';
import type { Clock } from '../support/clock.js';
import { messageOf } from '../support/message.js';
import { isInside } from '../support/paths.js';
import { readStateFile, writeStateFile } from '../support/state-file.js';
import { Waiters } from '../support/waiters.js';

/** What file browsers leave in every folder they show: compared lower-case. */
const LEFT_BEHIND: ReadonlySet<string> = new Set(['.ds_store', 'thumbs.db', 'ehthumbs.db', 'desktop.ini', '@eadir']);

/**
 * Whether a name is something a file browser or a NAS indexer left in a folder about its files,
 * with nothing of the user's in it: macOS's `.DS_Store` and `._photo.jpg` (AppleDouble: the
 * extended attributes of a photo that went), Windows's `Thumbs.db` and `desktop.ini`, a
 * Synology's `@eaDir` (its thumbnails of the folder's photos).
 */
export function isLeftBehind(name: string): boolean {
  return LEFT_BEHIND.has(name.toLowerCase()) || name.startsWith('._');
}

/** The state file of the folders that waited when the uploader last stopped. */
const WAITING_FILE = 'emptied-folders.json';

/** A folder waiting to be removed, and its watch folder. */
export interface WaitingFolder {
  folder: string;
  root: WatchRoot;
}

/**
 * The folders that waited when the uploader last stopped, of the watch folders it has now (a
 * folder whose watch folder is no longer watched is not the uploader's to remove any more).
 */
export function readWaitingFolders(stateDirectory: string, roots: readonly WatchRoot[]): WaitingFolder[] {
  const saved = readStateFile(stateDirectory, WAITING_FILE) as { folders?: unknown } | undefined;
  if (!Array.isArray(saved?.folders)) return [];
  const waiting: WaitingFolder[] = [];
  for (const entry of saved.folders as Array<{ folder?: unknown; root?: unknown }>) {
    const root = roots.find((candidate) => candidate.path === entry?.root);
    if (root !== undefined && typeof entry.folder === 'string' && isInside(entry.folder, root.path)) waiting.push({ folder: entry.folder, root });
  }
  return waiting;
}

/** Keeps the folders still waiting for the next start (none: an empty list). Best effort. */
export function saveWaitingFolders(stateDirectory: string, waiting: readonly WaitingFolder[]): void {
  writeStateFile(stateDirectory, WAITING_FILE, { folders: waiting.map(({ folder, root }) => ({ folder, root: root.path })) });
}

export interface EmptyFoldersOptions {
  clock: Clock;
  logger: Logger;
  /** How long a folder must stay empty after the uploader took its last file. */
  graceMs: number;
}

export class EmptyFolders {
  readonly #options: EmptyFoldersOptions;
  /** Folders the uploader took a file from, with their watch folder and when to try them. */
  readonly #due = new Map<string, { root: WatchRoot; at: number }>();
  readonly #stop = new AbortController();
  /** The loop, waiting for a first folder. */
  readonly #noted = new Waiters();
  #loop: Promise<void> | undefined;
  readonly #idleWaiters = new Waiters();

  constructor(options: EmptyFoldersOptions) {
    this.#options = options;
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  /** The uploader took `file` out of its folder (moved or deleted it). */
  note(file: string, root: WatchRoot): void {
    this.noteFolder(dirname(file), root);
  }

  /** `folder` is to be tried once it stayed empty for the grace (one that waited at the last stop). */
  noteFolder(folder: string, root: WatchRoot): void {
    if (!isInside(folder, root.path) || this.#stop.signal.aborted) return;
    // Another file taken out of it starts its wait again: the last one counts.
    this.#due.delete(folder);
    this.#due.set(folder, { root, at: this.#options.clock.monotonic() + this.#options.graceMs });
    this.#noted.wakeAll();
  }

  /** Resolves when no folder is waiting to be tried (`once` waits for it before it ends). */
  async whenIdle(): Promise<void> {
    while (this.#due.size > 0 && !this.#stop.signal.aborted) await this.#idleWaiters.next();
  }

  /** The folders not tried yet, first due first. */
  waiting(): WaitingFolder[] {
    return [...this.#due].map(([folder, { root }]) => ({ folder, root }));
  }

  /** Stops; folders still waiting stay as they are ({@link waiting} lists them). */
  async close(): Promise<void> {
    this.#stop.abort();
    this.#noted.wakeAll();
    this.#idleWaiters.wakeAll();
    await this.#loop;
  }

  async #run(): Promise<void> {
    const { clock } = this.#options;
    while (!this.#stop.signal.aborted) {
      // Notes are kept in the order of their times: the first is the next due.
      const next = this.#due.entries().next();
      if (next.done) {
        await this.#noted.next();
        continue;
      }
      const [folder, { root, at }] = next.value;
      const wait = at - clock.monotonic();
      if (wait > 0) {
        try {
          await clock.sleep(wait, this.#stop.signal);
        } catch {
          return; // closed
        }
        continue; // noted again meanwhile: look at the order again
      }
      this.#due.delete(folder);
      await this.#remove(folder, root);
      if (this.#due.size === 0) this.#idleWaiters.wakeAll();
    }
  }

  /** Removes `folder` if it is empty, then its parent, up to the watch folder. */
  async #remove(folder: string, root: WatchRoot): Promise<void> {
    for (let current = folder; isInside(current, root.path); current = dirname(current)) {
      const shown = relative(root.path, current);
      try {
        await removeFolder(current);
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        // Not empty (a file or folder was put in: it is not ours to remove), gone already, or a
        // mount point (a camera card mounted inside the watch folder): it stays, and that is all.
        if (code === 'ENOTEMPTY' || code === 'EEXIST' || code === 'ENOENT' || code === 'EBUSY') {
          this.#options.logger.debug({ folder: shown }, `left the folder ${shown}: not empty, gone, or a mount point`);
        } else {
          this.#options.logger.warn({ folder: shown, err: error }, `cannot remove the emptied folder ${shown}: ${messageOf(error)}`);
        }
        return;
      }
      this.#options.logger.info({ folder: shown }, `removed the emptied folder ${shown}`);
    }
  }
}

/**
 * Removes a folder that is empty, or holds only what file browsers leave behind; throws ENOTEMPTY
 * (nothing removed but such leftovers) when it holds anything else.
 */
async function removeFolder(folder: string): Promise<void> {
  try {
    await rmdir(folder);
    return;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOTEMPTY') throw error;
    const names = await readdir(folder);
    if (!names.every(isLeftBehind)) throw error;
    for (const name of names) await rm(join(folder, name), { recursive: true, force: true });
  }
  // Anything put in meanwhile keeps the folder (ENOTEMPTY again).
  await rmdir(folder);
}
