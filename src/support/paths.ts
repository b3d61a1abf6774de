import { isAbsolute, relative, sep } from 'node:path';

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
