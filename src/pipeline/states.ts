import type { FileVersion } from './types.js';

/**
 * The life of one file version, and the only moves it may make. The journal persists every
 * transition before the side effect that depends on it (write-ahead), so a restart knows where
 * each file stopped.
 *
 *   discovered -> settled -> hashed -> uploading -> on-server -> archiving -> archived
 *                                  \-> on-server             \-> deleting  -> deleted
 *                                      (server had it)        \-> kept
 *   any non-final state -> skipped | failed | gone | discovered (the file changed: start over)
 *   failed -> discovered (retried)
 *
 * `archiving` and `deleting` exist so that a crash between "the server has it" and "the original
 * is gone" is visible at the next start: recovery then looks at the disk to finish the move.
 */
export const FILE_STATES = [
  'discovered',
  'settled',
  'hashed',
  'uploading',
  'on-server',
  'archiving',
  'archived',
  'deleting',
  'deleted',
  'kept',
  'skipped',
  'failed',
  'gone',
] as const;

export type FileState = (typeof FILE_STATES)[number];

/** States a file version does not leave on its own; a later change of the file starts a new row. */
export const FINAL_STATES: readonly FileState[] = ['archived', 'deleted', 'kept', 'skipped', 'failed', 'gone'];

/** The forward moves; the escapes every non-final state has are added by `canTransition`. */
const FORWARD: Record<FileState, readonly FileState[]> = {
  discovered: ['settled'],
  settled: ['hashed'],
  hashed: ['uploading', 'on-server'],
  uploading: ['on-server'],
  'on-server': ['archiving', 'deleting', 'kept'],
  archiving: ['archived'],
  deleting: ['deleted'],
  archived: [],
  deleted: [],
  kept: [],
  skipped: [],
  failed: ['discovered'],
  gone: [],
};

/** Where every non-final state may always go (re-recording the same state is harmless too). */
const ESCAPES: readonly FileState[] = ['skipped', 'failed', 'gone', 'discovered'];

export function isFileState(value: unknown): value is FileState {
  return typeof value === 'string' && (FILE_STATES as readonly string[]).includes(value);
}

export function isFinal(state: FileState): boolean {
  return FINAL_STATES.includes(state);
}

/** Whether a file version may move `from -> to`; the journal refuses anything else. */
export function canTransition(from: FileState, to: FileState): boolean {
  if (FORWARD[from].includes(to)) return true;
  if (isFinal(from)) return false;
  return to === from || ESCAPES.includes(to);
}

/**
 * The states that must be on disk before the step that follows them: the journal commits them
 * at once. A crash between "archiving to X" and the link, or "deleting" and the unlink, is then
 * always visible at the next start. Every other transition may be committed a moment later, in
 * a batch: if a crash loses it, the file is found where it was and taken up again (the server's
 * duplicate check answers for an upload that did finish).
 */
export const WRITE_AHEAD: ReadonlySet<FileState> = new Set<FileState>(['archiving', 'deleting']);

/** Facts learned on the way to a state, stored with it; undefined fields leave stored values unchanged. */
export interface RecordDetails {
  checksum?: string;
  assetId?: string;
  serverStatus?: 'created' | 'duplicate';
  archivePath?: string;
  error?: string;
  /** Only for 'failed': when to try again (ms since epoch); null: only when it changes or on `retry`. */
  nextRetryAt?: number | null;
  /** Why, in a few words: kept in the transition's detail (and as `error` for skipped/gone). */
  reason?: string;
}

/** Records a transition of one file version; returns once it is durable enough to act on. */
export type Recorder = (file: FileVersion & { path: string }, state: FileState, details?: RecordDetails) => void;

/** The decision for a hashed file, made from what the server said. */
export type Decision = 'upload' | 'server-duplicate' | 'skip:unsupported';
