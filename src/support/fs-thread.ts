/**
 * The file-system thread (see fs-worker.ts): runs each request with the synchronous fs API and
 * answers it. Requests are answered in order; a failure is answered as a plain errno record.
 */
import { createHash } from 'node:crypto';
import { closeSync, linkSync, type Stats, lstatSync, openSync, readFileSync, readSync, renameSync, unlinkSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import type { FirstFile, FsAnswer, FsRequest, PlainStats } from './fs-worker.js';

const port = parentPort;
if (!port) throw new Error('fs-thread.js runs as a worker thread only');

// Requests come in batches (one message per turn of the main thread's event loop) and are
// answered in one message per batch: each message wakes the other thread, which is what costs.
port.on('message', (requests: FsRequest[]) => {
  const answers: FsAnswer[] = [];
  const transfer: ArrayBuffer[] = [];
  for (const request of requests) {
    try {
      if (request.op === 'readWhole') {
        const { checksum, filled, bytes } = readWhole(request.path, request.size, request.into);
        answers.push({ id: request.id, checksum, filled, bytes });
        // The bytes' memory moves to the main thread instead of being copied.
        transfer.push(bytes);
      } else if (request.op === 'hash') {
        answers.push({ id: request.id, hashed: hashWhole(request.path, request.size) });
      } else if (request.op === 'readFirst') {
        answers.push({ id: request.id, first: readFirst(request.paths, request.maxBytes) });
      } else {
        answers.push({ id: request.id, result: run(request) });
      }
    } catch (error) {
      const { code, message, syscall, path } = error as NodeJS.ErrnoException;
      answers.push({ id: request.id, error: { code, message, syscall, path } });
    }
  }
  port.postMessage(answers, transfer);
});

function run(request: Exclude<FsRequest, { op: 'readWhole' | 'hash' | 'readFirst' }>): PlainStats | null {
  switch (request.op) {
    case 'lstat': {
      const stats = lstatSync(request.path);
      return {
        size: stats.size,
        mtimeMs: stats.mtimeMs,
        ino: stats.ino,
        dev: stats.dev,
        atimeMs: stats.atimeMs,
        birthtimeMs: stats.birthtimeMs,
        isFile: stats.isFile(),
      };
    }
    case 'link':
      linkSync(request.from, request.to);
      return null;
    case 'unlink':
      unlinkSync(request.path);
      return null;
    case 'rename':
      renameSync(request.from, request.to);
      return null;
  }
}

/**
 * Reads up to `size + 1` bytes into `into` (memory the main thread sent, which goes back with the
 * answer): a regular file that returns exactly `size` is whole; one byte more means it grew (see
 * hashSettledFile).
 */
function readWhole(path: string, size: number, into: ArrayBuffer): { checksum: string; filled: number; bytes: ArrayBuffer } {
  const buffer = Buffer.from(into, 0, size + 1);
  const fd = openSync(path, 'r');
  let filled = 0;
  try {
    for (;;) {
      const bytesRead = readSync(fd, buffer, filled, buffer.length - filled, null);
      filled += bytesRead;
      if (bytesRead === 0 || filled >= size) break;
    }
  } finally {
    closeSync(fd);
  }
  const checksum = createHash('sha1').update(buffer.subarray(0, filled)).digest('hex');
  return { checksum, filled, bytes: into };
}

/**
 * The first of `paths` that is a regular file, read whole if it has at most `maxBytes` and its
 * size and mtime are the same after the read as before it (else without its bytes).
 */
function readFirst(paths: string[], maxBytes: number): FirstFile | null {
  for (const path of paths) {
    const before = lstatQuietly(path);
    if (!before?.isFile()) continue;
    const found = { path, size: before.size, mtimeMs: before.mtimeMs };
    if (before.size > maxBytes) return { ...found, bytes: null };
    let bytes: Buffer;
    try {
      bytes = readFileSync(path);
    } catch {
      return { ...found, bytes: null };
    }
    const after = lstatQuietly(path);
    const steady = bytes.length === before.size && after?.size === before.size && after.mtimeMs === before.mtimeMs;
    return { ...found, bytes: steady ? bytes : null };
  }
  return null;
}

/** No error is made for a missing name (most photos have no sidecar): making one costs more than the call. */
function lstatQuietly(path: string): Stats | undefined {
  try {
    return lstatSync(path, { throwIfNoEntry: false });
  } catch {
    return undefined;
  }
}

/** One read buffer, reused by every hash this thread runs (one at a time). */
let hashBuffer: Buffer | undefined;

/**
 * Hashes a file of `size` bytes in 1 MiB reads without keeping it: a short read once `size` is
 * reached is the end of the file (see hashSettledFile); the result's size tells whether it changed.
 */
function hashWhole(path: string, size: number): { checksum: string; size: number } {
  hashBuffer ??= Buffer.allocUnsafe(1024 * 1024);
  const buffer = hashBuffer;
  const hash = createHash('sha1');
  const fd = openSync(path, 'r');
  let total = 0;
  try {
    for (;;) {
      const bytesRead = readSync(fd, buffer, 0, buffer.length, null);
      if (bytesRead === 0) break;
      hash.update(buffer.subarray(0, bytesRead));
      total += bytesRead;
      if (total >= size && bytesRead < buffer.length) break;
    }
  } finally {
    closeSync(fd);
  }
  return { checksum: hash.digest('hex'), size: total };
}
