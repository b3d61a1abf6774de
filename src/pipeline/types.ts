import type { WatchRoot } from '../config.js';

/** A file's identity at one moment: a new size or mtime is a new version of the file. */
export interface FileVersion {
  size: number;
  mtimeMs: number;
}

/** Whether `actual` (null: no regular file there) is the version `expected`. */
export function sameVersion(actual: FileVersion | null, expected: FileVersion): boolean {
  return actual !== null && actual.size === expected.size && actual.mtimeMs === expected.mtimeMs;
}

/** A file that detection found eligible (name, extension, size limit, not a link). */
export interface Candidate extends FileVersion {
  /** Absolute path. */
  path: string;
  /** The watched folder it was found under. */
  root: WatchRoot;
}

/** Which file a name leads to: the same inode of the same device is the same file, whatever its names. */
export interface FileIdentity {
  ino: number;
  dev: number;
}

export function sameFile(a: FileIdentity, b: FileIdentity): boolean {
  return a.ino === b.ino && a.dev === b.dev;
}

/** A candidate whose size and mtime held still for the stability window. */
export interface SettledFile extends Candidate {
  /** Creation time if the file system knows it, else mtime (ms since epoch). */
  birthtimeMs: number;
  /**
   * The file the path led to while it settled. A file of the same size and mtime renamed over
   * it (a sync tool's new version, `cp -p`, `rsync -a`) is another file: the original's name is
   * archived or removed only while it still leads to this one.
   */
  identity?: FileIdentity;
}

/** Why detection passed over a file that looked like media. */
export type SkipReason = 'too-large' | 'empty';
