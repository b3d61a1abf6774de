import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { RETRY_REQUEST_FILE } from '../daemon.js';
import { Journal } from '../journal/journal.js';
import { acquireLock, isLocked } from '../journal/lock.js';

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
