/**
 * Hash: the SHA-1 of a file's bytes, as lowercase hex — the checksum Immich stores per asset and
 * uses to detect duplicates.
 */
import { createHash } from 'node:crypto';
import { abortReason } from '../support/clock.js';
import { closeFd, openFd, readFd } from '../support/fd.js';
import type { FsWorker } from '../support/fs-worker.js';

/**
 * Read size. Measured (docs STACK.md): 1 MiB reads hash as fast as `openssl dgst`, ~25% faster
 * than the 64 KiB stream default, and one reused buffer keeps memory flat whatever the file size.
 */
const CHUNK_BYTES = 1024 * 1024;

/**
 * The largest settled file that is read whole, hashed from memory and uploaded from those same
 * bytes: a file that fits one hash read. Such a file costs one open, one read and one close
 * instead of two opens and five or more reads (hash, then upload), and on a 2-core machine every
 * asynchronous fs call costs 15-50 µs of main-thread time. The limit is the hash chunk so that no
 * file is held that the streaming hash would not have read in one go anyway: memory stays bounded
 * by the files in flight × 1 MiB (DESIGN.md), and larger files keep streaming in constant memory.
 */
export const WHOLE_FILE_MAX_BYTES = CHUNK_BYTES;

/**
 * Read buffers kept between hashes: allocating 1 MiB per file (thousands of small files a
 * minute) made the garbage collector a tenth of the main thread's work in the benchmark.
 */
const spareBuffers: Buffer[] = [];

/**
 * The most spare buffers kept. Without a bound the pool keeps its peak for the life of the
 * process: the sidecars of the files archived at once are hashed at once, and a daemon held 35
 * such buffers (35 MiB) for good after a few thousand photos with sidecars.
 */
const MAX_SPARE_BUFFERS = 4;

/** Read buffers kept for the next hashes (for tests). */
export function spareHashBuffers(): number {
  return spareBuffers.length;
}

export interface FileHash {
  /** SHA-1 of the content, lowercase hex (40 characters). */
  checksum: string;
  /** Bytes read, which is the size of the content that was hashed. */
  size: number;
  /**
   * The very bytes that were hashed, when the file was small enough to be read whole
   * (`WHOLE_FILE_MAX_BYTES`) and had its settled size: the upload sends them from memory, so what
   * the server gets is exactly what was hashed. Absent for larger files, which are streamed again.
   * Their memory goes back to the thread that read them (`FsWorker.recycle`) once they are sent.
   */
  bytes?: Buffer;
}

/**
 * Streams the file through SHA-1 in constant memory, reading until a read returns nothing (so it
 * also works on pipes). The signal is checked before the first read and after every read (a read
 * in progress is not interrupted), and the handle is closed whatever happens. Rejects with the
 * signal's reason on abort, or with the fs error (ENOENT, EISDIR...).
 */
export async function hashFile(path: string, signal?: AbortSignal): Promise<FileHash> {
  if (signal?.aborted) throw abortReason(signal);
  const fd = await openFd(path, 'r');
  try {
    return await streamHash(fd, undefined, signal);
  } finally {
    await closeFd(fd);
  }
}

/**
 * Hashes a settled file: a regular file (detection and settling `lstat`ed it) that had `settledSize`
 * bytes. A result whose `size` differs from `settledSize` means the file changed since it settled.
 *
 * The work is done on `thread` (the caller picks one for small and one for large files, so a
 * long hash never holds up the small calls of other files). Up to `WHOLE_FILE_MAX_BYTES`, the
 * file is read whole into its own buffer, asking for `settledSize + 1` bytes: a read of a regular
 * file that returns less than asked has reached the end, so getting exactly `settledSize` is the
 * whole file (one open, one read, one close), and the extra byte means it grew. The result then
 * carries the bytes. Larger files are hashed in 1 MiB reads into the thread's one reused buffer,
 * and a short read that completes the settled size ends it instead of one more read that
 * returns nothing; the main thread meanwhile uploads other files.
 *
 * A short read before the settled size is reached is read on, so a file system that splits reads
 * costs a read more rather than a file reported changed forever.
 */
export async function hashSettledFile(
  path: string,
  settledSize: number,
  thread: FsWorker,
  signal?: AbortSignal,
): Promise<FileHash> {
  if (signal?.aborted) throw abortReason(signal);
  if (settledSize <= WHOLE_FILE_MAX_BYTES) {
    const { checksum, bytes } = await thread.readWhole(path, settledSize, signal);
    // Only the settled version travels on: a file that changed is sent round again, not uploaded.
    if (bytes.length === settledSize) return { checksum, size: settledSize, bytes };
    thread.recycle(bytes);
    return { checksum, size: bytes.length };
  }
  return thread.hash(path, settledSize, signal);
}

/**
 * The streaming loop. With `settledSize` the handle is a regular file: a read that returns less
 * than asked once the settled size is reached is the end of the file. Without it (a pipe, say),
 * only a read of 0 bytes is.
 */
async function streamHash(fd: number, settledSize: number | undefined, signal: AbortSignal | undefined): Promise<FileHash> {
  const hash = createHash('sha1');
  const buffer = spareBuffers.pop() ?? Buffer.allocUnsafe(CHUNK_BYTES);
  try {
    let size = 0;
    for (;;) {
      if (signal?.aborted) throw abortReason(signal);
      // Position null: read on from the handle's own offset (we are its only reader), which also
      // works for pipes, where positioned reads fail with ESPIPE.
      const { bytesRead } = await readFd(fd, buffer, 0, buffer.length, null);
      // Checked again here so an abort during the last read is not answered with a result.
      if (signal?.aborted) throw abortReason(signal);
      if (bytesRead === 0) break;
      // update() consumes the bytes synchronously, so the buffer can be reused for the next read.
      hash.update(buffer.subarray(0, bytesRead));
      size += bytesRead;
      if (settledSize !== undefined && size >= settledSize && bytesRead < buffer.length) break;
    }
    return { checksum: hash.digest('hex'), size };
  } finally {
    if (spareBuffers.length < MAX_SPARE_BUFFERS) spareBuffers.push(buffer);
  }
}
