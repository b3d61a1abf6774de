import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { RETRY_REQUEST_FILE } from '../daemon.js';
import { Journal, JOURNAL_FILE } from '../journal/journal.js';
import { acquireLock, isLocked } from '../journal/lock.js';

/** Where the journal commands look, for a user who ran one from another folder than the uploader's. */
export const STATE_FROM = 'STATE_DIRECTORY comes from --state-directory, the environment, or the .env of the current folder';

/**
 * `retry`: failed files become eligible again now. A running uploader owns the journal, so it
 * is asked (a request file it looks for every few seconds); otherwise the journal is updated
 * here and the next run tries them.
 */
export function requestRetry(stateDirectory: string, logger: Logger): string {
  if (isLocked(stateDirectory)) {
    writeFileSync(join(stateDirectory, RETRY_REQUEST_FILE), '', { mode: 0o600 });
    return 'asked the running uploader to try its failed files again now';
  }
  // Nothing to retry, and no state folder or journal to make where none was.
  if (!existsSync(join(stateDirectory, JOURNAL_FILE))) return `no journal in ${stateDirectory}: no failed file to try again (${STATE_FROM})`;
  const lock = acquireLock(stateDirectory);
  try {
    const journal = Journal.open({ directory: stateDirectory, logger });
    try {
      const count = journal.makeFailedEligible();
      return `${count} failed file(s) will be tried again at the next run`;
    } finally {
      journal.close();
    }
  } finally {
    lock.release();
  }
}
