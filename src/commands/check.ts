import { constants } from 'node:fs';
import { access, readdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Config } from '../config.js';
import { MIN_SERVER_MAJOR, type ImmichClient } from '../immich/client.js';
import { isImmichError } from '../immich/errors.js';
import { Journal, JOURNAL_FILE } from '../journal/journal.js';
import { archiveDiskAway, notMountedError, readAwayDisks } from '../pipeline/disks.js';
import { networkShareAdvice } from '../pipeline/detect.js';
import { messageOf } from '../support/message.js';
import { networkFileSystemOf, readMountTable, type SystemFiles } from '../support/mount-table.js';

export interface CheckLine {
  ok: boolean;
  what: string;
  detail: string;
}

export interface CheckReport {
  lines: CheckLine[];
  /** The server refused the key (401), or the key may not upload: the CLI exits 3, as `once` and `watch` do. */
  keyRejected: boolean;
}

/**
 * `check`: can this configuration run? Reaches the server, reads its version, identifies the key
 * (with `GET /api/api-keys/me`, which a least-privilege key may call, unlike `users/me`), and
 * looks at the folders. Never prints the key.
 */
export async function runChecks(config: Config, client: ImmichClient, system: SystemFiles = {}): Promise<CheckReport> {
  const lines: CheckLine[] = [];
  let keyRejected = false;
  const add = (ok: boolean, what: string, detail: string): void => void lines.push({ ok, what, detail });

  try {
    await client.ping();
    add(true, 'server reachable', config.apiUrl);
    try {
      const v = await client.serverVersion();
      add(v.major >= MIN_SERVER_MAJOR, 'server version', `Immich ${v.major}.${v.minor}.${v.patch}${v.major < MIN_SERVER_MAJOR ? ' (too old: 2.x or 3.x needed; fix: upgrade Immich)' : ''}`);
    } catch (error) {
      add(false, 'server version', messageOf(error));
    }
    try {
      const key = await client.apiKeyInfo();
      add(true, 'API key accepted', `"${key.name}", permissions: ${key.permissions.join(', ') || '(none)'}`);
      const canUpload = key.permissions.includes('all') || key.permissions.includes('asset.upload');
      keyRejected = !canUpload;
      add(
        canUpload,
        'permission asset.upload',
        canUpload ? 'granted' : 'missing; fix: create a key with asset.upload in Account Settings > API Keys',
      );
    } catch (error) {
      keyRejected = isImmichError(error) && error.kind === 'auth';
      add(false, 'API key accepted', keyRejected ? 'the server rejected the key; fix: create a new key in Account Settings > API Keys' : messageOf(error));
    }
  } catch (error) {
    add(false, 'server reachable', messageOf(error));
  }

  const table = await readMountTable(system.mountTable);
  const unmounted = await readAwayDisks(system, config.stateDirectory);
  for (const root of config.watchRoots) {
    const away = unmounted(root.path);
    if (away !== undefined) {
      add(false, 'watch folder readable', notMountedError('WATCH_DIRECTORIES', root.path, away, config.stateDirectory).message);
      continue;
    }
    try {
      await access(root.path, constants.R_OK | constants.X_OK);
      await readdir(root.path);
      const share = table === undefined || config.watchPolling ? undefined : networkFileSystemOf(table, root.path);
      const advice = share === undefined ? '' : `, ${networkShareAdvice(share, config.rescanIntervalMs, config.watchPollIntervalMs)}`;
      add(true, 'watch folder readable', root.path + advice);
    } catch (error) {
      add(false, 'watch folder readable', `${root.path}: ${folderProblem(error, 'read')}`);
    }
  }
  // The archive is used in move mode only.
  if (config.afterUpload === 'move') {
    const away = await archiveDiskAway(config.stateDirectory, config.archiveDirectory, system);
    if (away === undefined) add(...(await writableFolder('archive folder writable', config.archiveDirectory)));
    else add(false, 'archive folder writable', away.message);
  }
  // The journal is written there (a Docker volume or a folder owned by another user is the usual trouble).
  add(...(await writableFolder('state folder writable', config.stateDirectory)));
  // One written by a newer release stops `once` and `watch`; a damaged one is moved aside by them.
  add(...journalReadable(config.stateDirectory));
  return { lines, keyRejected };
}

function journalReadable(directory: string): [boolean, string, string] {
  try {
    const journal = Journal.openReadOnly(directory);
    if (journal === undefined) return [true, 'journal readable', 'none yet: the first run makes it'];
    journal.close();
    return [true, 'journal readable', join(directory, JOURNAL_FILE)];
  } catch (error) {
    return [false, 'journal readable', messageOf(error)];
  }
}

async function writableFolder(what: string, path: string): Promise<[boolean, string, string]> {
  // It need not exist yet: then its nearest existing parent must let us create it.
  let probe = path;
  for (;;) {
    try {
      const info = await stat(probe);
      if (!info.isDirectory()) return [false, what, `${probe} is not a folder`];
      await access(probe, constants.W_OK | constants.X_OK);
      return [true, what, probe === path ? path : `${path} (will be created in ${probe})`];
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' || dirname(probe) === probe) return [false, what, `${probe}: ${folderProblem(error, 'write')}`];
      probe = dirname(probe);
    }
  }
}


/** Why a folder failed its check, in words, with the fix for the usual causes. */
function folderProblem(error: unknown, want: 'read' | 'write'): string {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'EACCES' || code === 'EPERM') return `permission denied; fix: let the uploader's user ${want} it (chmod or chown; in Docker, \`user:\`)`;
  if (code === 'EROFS') return 'on a read-only file system; fix: mount it read-write (in Docker, drop `:ro`)';
  return messageOf(error);
}

export function formatCheckLine(line: CheckLine): string {
  return `${line.ok ? 'ok    ' : 'FAILED'}  ${line.what}: ${line.detail}`;
}
