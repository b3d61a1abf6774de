/**
 * The life of one file version, and the only moves it may make. The in-memory tracker follows
 * it today; the journal will persist the same states.
 *
 *   discovered -> settled -> hashed -> uploading -> on-server -> archived
 *        |           |          |           |            |
 *        +-----------+----------+-----------+------------+--> skipped | failed
 *
 * `hashed -> on-server` directly when the server already has the checksum; every non-final
 * state may also go back to `discovered` when the file changes under us.
 */
export type FileState = 'discovered' | 'settled' | 'hashed' | 'uploading' | 'on-server' | 'archived' | 'skipped' | 'failed';

const NEXT: Record<FileState, readonly FileState[]> = {
  discovered: ['settled', 'skipped', 'failed', 'discovered'],
  settled: ['hashed', 'skipped', 'failed', 'discovered'],
  hashed: ['uploading', 'on-server', 'skipped', 'failed', 'discovered'],
  uploading: ['on-server', 'failed', 'discovered'],
  'on-server': ['archived', 'failed', 'discovered'],
  archived: [],
  // A skipped or failed file is looked at again when it changes or its retry time comes.
  skipped: ['discovered'],
  failed: ['discovered'],
};

export function isFinal(state: FileState): boolean {
  return state === 'archived' || state === 'skipped' || state === 'failed';
}

export function canMove(from: FileState, to: FileState): boolean {
  return NEXT[from].includes(to);
}

/** The decision for a hashed file, made from what the server said. */
export type Decision = 'upload' | 'server-duplicate' | 'skip:unsupported';
