import type { SentSidecar } from './sidecar.js';
import type { FileVersion } from './types.js';

/**
 * The life of one file version, and the only moves it may make. The journal persists every
 * transition before the side effect that depends on it (write-ahead), so a restart knows where
 * each file stopped.
 *
 *   discovered -> settled -> hashed -> uploading -> on-server -> archiving -> archived
 *                                  \-> on-server             \-> deleting  -> deleted
 *                                      (server had it)        \-> kept
 *   archiving | deleting -> kept (the original's folder cannot be written to: it stays)
 *   any non-final state -> skipped | failed | gone | discovered (the file changed: start over)
 *   failed -> discovered (retried) | gone (no longer there)
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
  // Kept: the original's folder turned out not to be writable, and nothing was moved.
  archiving: ['archived', 'kept'],
  deleting: ['deleted', 'kept'],
  archived: [],
  deleted: [],
  kept: [],
  skipped: [],
  // Gone: a failed file that is no longer there (removed by hand, or its folder dropped).
  failed: ['discovered', 'gone'],
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

/** The states that must be on disk before the step that follows them (see WRITE_AHEAD). */
export type WriteAheadState = 'archiving' | 'deleting';

/** Every other state: it may be committed a moment after it is recorded. */
export type LaterState = Exclude<FileState, WriteAheadState>;

/**
 * The states that must be on disk before the step that follows them: recording one waits for its
 * commit. A crash between "archiving to X" and the link, or "deleting" and the unlink, is then
 * always visible at the next start. Every other transition may be committed a moment later, in
 * a batch: if a crash loses it, the file is found where it was and taken up again (the server's
 * duplicate check answers for an upload that did finish).
 */
export const WRITE_AHEAD: ReadonlySet<FileState> = new Set<WriteAheadState>(['archiving', 'deleting']);

export function isWriteAhead(state: FileState): state is WriteAheadState {
  return WRITE_AHEAD.has(state);
}

/** Facts learned on the way to a state, stored with it; undefined fields leave stored values unchanged. */
export interface RecordDetails {
  checksum?: string;
  assetId?: string;
  serverStatus?: 'created' | 'duplicate';
  archivePath?: string;
  /** With 'on-server': the sidecar our upload sent with the file (delete mode removes that version). */
  sidecar?: SentSidecar;
  error?: string;
  /** Only for 'failed': when to try again (ms since epoch); null: only when it changes or on `retry`. */
  nextRetryAt?: number | null;
  /** Why, in a few words: kept in the transition's detail (and as `error` for skipped/gone). */
  reason?: string;
}

/** The file version a transition is recorded for. */
export type RecordedFile = FileVersion & { path: string };

/**
 * Records a transition of one file version. A write-ahead state returns a promise that resolves
 * once the transition is committed: await it, and do the step (link, unlink) only then; a
 * rejection means it is not on disk and the step must not happen. Any other state returns
 * nothing: it is committed a moment later. The two signatures let the compiler (and the
 * no-floating-promises lint) tell which calls must be awaited.
 */
export interface Recorder {
  (file: RecordedFile, state: WriteAheadState, details?: RecordDetails): Promise<void>;
  (file: RecordedFile, state: LaterState, details?: RecordDetails): void;
}

/** A Recorder from its two halves: one for the write-ahead states, one for the rest. */
export function makeRecorder(
  writeAhead: (file: RecordedFile, state: WriteAheadState, details?: RecordDetails) => Promise<void>,
  later: (file: RecordedFile, state: LaterState, details?: RecordDetails) => void,
): Recorder {
  function record(file: RecordedFile, state: WriteAheadState, details?: RecordDetails): Promise<void>;
  function record(file: RecordedFile, state: LaterState, details?: RecordDetails): void;
  function record(file: RecordedFile, state: FileState, details?: RecordDetails): Promise<void> | void {
    return isWriteAhead(state) ? writeAhead(file, state, details) : later(file, state, details);
  }
  return record;
}

/** The decision for a hashed file, made from what the server said. */
export type Decision = 'upload' | 'server-duplicate' | 'skip:unsupported';
