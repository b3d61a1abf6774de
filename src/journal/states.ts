/** The journal's one error type. The states it records are the pipeline's (pipeline/states.ts). */
export type JournalErrorKind =
  /** The journal file was written by a newer program; it is left untouched. */
  | 'newer-schema'
  /** Another live process holds the state directory. */
  | 'locked'
  /** The state directory or journal cannot be created, opened or migrated. */
  | 'unusable'
  /** A commit failed for the disk's sake (full, failing, read-only); the next commit tries again. */
  | 'unwritable'
  /** A caller asked for a move the state machine forbids: a bug, never a user error. */
  | 'illegal-transition';

/** The journal's one error type; `kind` says what went wrong, the message says how to fix it. */
export class JournalError extends Error {
  override readonly name = 'JournalError';

  constructor(
    readonly kind: JournalErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
