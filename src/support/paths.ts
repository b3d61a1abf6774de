import { mkdirSync, statSync } from 'node:fs';
import { dirname, isAbsolute, relative, sep } from 'node:path';

/**
 * Whether `child` lies strictly inside `parent` (both absolute and resolved). Compares path
 * segments, so a sibling named `..photos` is not mistaken for a way up.
 */
export function isInside(child: string, parent: string): boolean {
  const below = relative(parent, child);
  return below !== '' && below !== '..' && !below.startsWith(`..${sep}`) && !isAbsolute(below);
}

/** Whether `path` is `folder` itself or lies inside it. */
export function isAtOrInside(path: string, folder: string): boolean {
  return path === folder || isInside(path, folder);
}

/**
 * `mkdir -p`, one level at a time from the nearest folder that exists. Node's recursive mkdir
 * spins for ever, deaf to signals, where a file system refuses a new folder with ENOENT (a path
 * under /proc or /sys): here each level is tried once, and such a refusal is thrown.
 */
export function makeFoldersSync(path: string, mode?: number): void {
  try {
    mkdirSync(path, { mode });
    return;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' && statSync(path).isDirectory()) return;
    if (code !== 'ENOENT' || dirname(path) === path) throw error;
  }
  makeFoldersSync(dirname(path), mode);
  mkdirSync(path, { mode });
}
