/**
 * Hash: the SHA-1 of a file's bytes, as lowercase hex — the checksum Immich stores per asset and
 * uses to detect duplicates.
 */
import { createHash } from 'node:crypto';
import { close, open, read } from 'node:fs';
import { promisify } from 'node:util';
import { abortReason } from '../support/clock.js';

/**
 * Read size. Measured (docs STACK.md): 1 MiB reads hash as fast as `openssl dgst`, ~25% faster
 * than the 64 KiB stream default, and one reused buffer keeps memory flat whatever the file size.
 */
const CHUNK_BYTES = 1024 * 1024;

/**
 * Read buffers kept between files: allocating 1 MiB per file (thousands of small files a
 * minute) made the garbage collector a tenth of the main thread's work in the benchmark.
 * One buffer per concurrent hash is ever allocated.
 */
const spareBuffers: Buffer[] = [];

// The callback API, promisified: on Node 20 a FileHandle's open/read/close cost about twice as
// much main-thread time (the benchmark's profile put FileHandle.close alone at 6% for small files).
const openFile = promisify(open);
const readFile = promisify(read);
const closeFile = promisify(close);

export interface FileHash {
  /** SHA-1 of the content, lowercase hex (40 characters). */
  checksum: string;
  /** Bytes read, which is the size of the content that was hashed. */
  size: number;
}

/**
 * Streams the file through SHA-1 in constant memory. The signal is checked before the first read
 * and after every read (a read in progress is not interrupted), and the handle is closed whatever
 * happens. Rejects with the signal's reason on abort, or with the fs error (ENOENT, EISDIR...).
 */
export async function hashFile(path: string, signal?: AbortSignal): Promise<FileHash> {
  if (signal?.aborted) throw abortReason(signal);
  const fd = await openFile(path, 'r');
  let buffer: Buffer | undefined;
  try {
    const hash = createHash('sha1');
    buffer = spareBuffers.pop() ?? Buffer.allocUnsafe(CHUNK_BYTES);
    let size = 0;
    for (;;) {
      if (signal?.aborted) throw abortReason(signal);
      // Position null: read on from the handle's own offset (we are its only reader), which also
      // works for pipes, where positioned reads fail with ESPIPE.
      const { bytesRead } = await readFile(fd, buffer, 0, buffer.length, null);
      // Checked again here so an abort during the last read is not answered with a result.
      if (signal?.aborted) throw abortReason(signal);
      if (bytesRead === 0) break;
      // update() consumes the bytes synchronously, so the buffer can be reused for the next read.
      hash.update(buffer.subarray(0, bytesRead));
      size += bytesRead;
    }
    return { checksum: hash.digest('hex'), size };
  } finally {
    if (buffer) spareBuffers.push(buffer);
    await closeFile(fd);
  }
}
