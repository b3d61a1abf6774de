import { execFile, execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { open, readdir, readlink, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WHOLE_FILE_MAX_BYTES, hashFile, hashSettledFile, spareHashBuffers } from '../../src/pipeline/hash.js';
import { FsWorker } from '../../src/support/fs-worker.js';
import { hasOpenssl } from '../helpers/openssl.js';
import { makeTempDir } from '../helpers/temp-dir.js';

const MiB = 1024 * 1024;
const run = promisify(execFile);

/** Paths this process holds open (Linux): a leaked handle shows up here. */
async function openPaths(): Promise<string[]> {
  const paths: string[] = [];
  for (const fd of await readdir('/proc/self/fd')) {
    try {
      paths.push(await readlink(`/proc/self/fd/${fd}`));
    } catch {
      // The fd of readdir itself, closed by now.
    }
  }
  return paths;
}

const sha1 = (bytes: Uint8Array): string => createHash('sha1').update(bytes).digest('hex');

describe('hashFile', () => {
  let dir: Awaited<ReturnType<typeof makeTempDir>>;
  beforeAll(async () => {
    dir = await makeTempDir('iau-hash-');
  });
  afterAll(async () => {
    await dir.remove();
  });

  const sizes: [string, number][] = [
    ['empty', 0],
    ['one byte', 1],
    ['small', 1_000],
    ['one byte under 1 MiB', MiB - 1],
    ['exactly 1 MiB', MiB],
    ['one byte over 1 MiB', MiB + 1],
    ['several MiB, not a multiple', 5 * MiB + 12_345],
  ];

  it.each(sizes)('matches node:crypto over the same bytes: %s (%i bytes)', async (label, size) => {
    const bytes = randomBytes(size);
    const path = join(dir.path, `${label}.bin`);
    await writeFile(path, bytes);
    expect(await hashFile(path)).toEqual({ checksum: sha1(bytes), size });
  });

  it('gives the well-known SHA-1 of the empty file and of "abc"', async () => {
    const empty = join(dir.path, 'empty');
    const abc = join(dir.path, 'abc');
    await writeFile(empty, '');
    await writeFile(abc, 'abc');
    expect((await hashFile(empty)).checksum).toBe('da39a3ee5e6b4b0d3255bfef95601890afd80709');
    expect((await hashFile(abc)).checksum).toBe('a9993e364706816aba3e25717850c26c9cd0d89d');
  });

  it.skipIf(!hasOpenssl())('agrees with `openssl dgst -sha1` (skipped when openssl is not installed)', async () => {
    const path = join(dir.path, 'openssl check é.bin');
    await writeFile(path, randomBytes(3 * MiB + 7));
    const { stdout } = await run('openssl', ['dgst', '-sha1', path]);
    // "SHA1(<path>)= <hex>" (the prefix differs between OpenSSL versions; the hex is last).
    const expected = stdout.trim().split(/\s+/).pop();
    expect((await hashFile(path)).checksum).toBe(expected);
  });

  it('closes its handle after success and after failure', async () => {
    const path = join(dir.path, 'handle.bin');
    await writeFile(path, randomBytes(2 * MiB));
    await hashFile(path);
    expect(await openPaths()).not.toContain(path);

    await expect(hashFile(dir.path)).rejects.toMatchObject({ code: 'EISDIR' });
    expect(await openPaths()).not.toContain(dir.path);
  });

  it('keeps only a few read buffers once many hashes ran at once', async () => {
    // 32 files of 3 MiB hashed at once: each holds a 1 MiB buffer while it reads. A daemon that
    // kept them all would hold its peak (32 MiB here) for as long as it runs.
    const bytes = randomBytes(3 * MiB);
    const paths = Array.from({ length: 32 }, (_, i) => join(dir.path, `many-${i}.bin`));
    await Promise.all(paths.map((path) => writeFile(path, bytes)));
    const hashes = await Promise.all(paths.map((path) => hashFile(path)));
    expect(new Set(hashes.map((hash) => hash.checksum))).toEqual(new Set([sha1(bytes)]));
    expect(spareHashBuffers()).toBeGreaterThan(0);
    expect(spareHashBuffers()).toBeLessThanOrEqual(4);
  });

  it('rejects a missing file with ENOENT', async () => {
    await expect(hashFile(join(dir.path, 'missing.jpg'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('rejects with the abort reason when the signal is already aborted, opening nothing', async () => {
    const path = join(dir.path, 'aborted.bin');
    await writeFile(path, 'x');
    const reason = new Error('shutting down');
    await expect(hashFile(path, AbortSignal.abort(reason))).rejects.toBe(reason);
    await expect(hashFile(path, AbortSignal.abort())).rejects.toMatchObject({ name: 'AbortError' });
  });

  it('stops between reads when aborted mid-file and closes its handle', async () => {
    // A FIFO lets the test decide when each read returns: the hash blocks on the pipe until we
    // write, so the abort lands for certain while hashFile is part-way through.
    const fifo = join(dir.path, 'pipe');
    execFileSync('mkfifo', [fifo]);
    const controller = new AbortController();
    const hashing = hashFile(fifo, controller.signal);
    const writer = await open(fifo, 'w');
    try {
      // Less than the pipe's buffer, so the write never waits for the reader.
      await writer.write(randomBytes(1_000));
      controller.abort();
    } finally {
      // Closing (rather than writing more) cannot fail with EPIPE once the reader has gone; the
      // read it wakes with end-of-file is checked against the signal too.
      await writer.close();
    }
    await expect(hashing).rejects.toMatchObject({ name: 'AbortError' });
    expect(await openPaths()).not.toContain(fifo);
  });
});

describe('hashSettledFile', () => {
  const files = new FsWorker();
  afterAll(() => files.close());

  let dir: Awaited<ReturnType<typeof makeTempDir>>;
  beforeAll(async () => {
    dir = await makeTempDir('iau-hash-settled-');
  });
  afterAll(async () => {
    await dir.remove();
  });

  it('reads whole what fits one hash read, which is 1 MiB', () => {
    expect(WHOLE_FILE_MAX_BYTES).toBe(MiB);
  });

  const sizes: [string, number, boolean][] = [
    ['empty', 0, true],
    ['one byte', 1, true],
    ['200 KB', 200 * 1024, true],
    ['one byte under 1 MiB', MiB - 1, true],
    ['exactly 1 MiB', MiB, true],
    ['one byte over 1 MiB', MiB + 1, false],
    ['exactly 2 MiB', 2 * MiB, false],
    ['several MiB, not a multiple', 5 * MiB + 12_345, false],
  ];

  it.each(sizes)('hashes %s (%i bytes); the bytes come along only up to 1 MiB', async (label, size, inMemory) => {
    const bytes = randomBytes(size);
    const path = join(dir.path, `${label}.bin`);
    await writeFile(path, bytes);
    const result = await hashSettledFile(path, size, files);
    expect(result.checksum).toBe(sha1(bytes));
    expect(result.size).toBe(size);
    if (inMemory) {
      expect(result.bytes?.equals(bytes)).toBe(true);
    } else {
      expect(result.bytes).toBeUndefined();
    }
    expect(await openPaths()).not.toContain(path);
  });

  // Settled at one size, a different size when hashed: the caller sees a size that is not the
  // settled one (and so reports the file changed), and gets no bytes to upload.
  const changes: [string, number, number][] = [
    ['a small file that grew', 1_000, 1_500],
    ['a small file that grew past 1 MiB', MiB, MiB + 10],
    ['a small file that shrank', 1_000, 400],
    ['a small file that became empty', 1_000, 0],
    ['a large file that grew', 2 * MiB + 5, 3 * MiB],
    ['a large file that shrank', 3 * MiB, 2 * MiB + 5],
    ['a large file that shrank under 1 MiB', 3 * MiB, 1_000],
  ];

  it.each(changes)('%s: settled at %i bytes, %i on disk', async (label, settled, now) => {
    const bytes = randomBytes(now);
    const path = join(dir.path, `${label}.bin`);
    await writeFile(path, bytes);
    const result = await hashSettledFile(path, settled, files);
    expect(result.size).not.toBe(settled);
    expect(result.bytes).toBeUndefined();
    if (now < settled) {
      expect(result).toMatchObject({ size: now, checksum: sha1(bytes) });
    } else {
      // A file that grew may be read only as far as it takes to see that it did.
      expect(result.size).toBeGreaterThan(settled);
    }
  });

  it('a file cut between settling and hashing is seen at its new size', async () => {
    const path = join(dir.path, 'cut.bin');
    await writeFile(path, randomBytes(300_000));
    await truncate(path, 100_000);
    expect((await hashSettledFile(path, 300_000, files)).size).toBe(100_000);
  });

  it('rejects a missing file with ENOENT and an aborted signal with its reason, opening nothing', async () => {
    await expect(hashSettledFile(join(dir.path, 'missing.jpg'), 10, files)).rejects.toMatchObject({ code: 'ENOENT' });
    const path = join(dir.path, 'aborted.bin');
    await writeFile(path, 'x');
    const reason = new Error('shutting down');
    await expect(hashSettledFile(path, 1, files, AbortSignal.abort(reason))).rejects.toBe(reason);
    expect(await openPaths()).not.toContain(path);
  });
});
