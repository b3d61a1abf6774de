/**
 * Deterministic workload files: the same seed and names give the same bytes, so every tool gets
 * an identical, fresh copy (tools move or delete what they upload). Content is an AES-256-CTR
 * keystream (key from the seed, IV from the file's name): incompressible, unique per file (the
 * server deduplicates by checksum) and generated at several GB/s.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdir, open } from 'node:fs/promises';
import { dirname, join } from 'node:path';

export interface FileSpec {
  /** Path below the workload's folder, `/`-separated. */
  rel: string;
  size: number;
}

const CHUNK = 1024 * 1024;
const ZEROS = Buffer.alloc(CHUNK);

function cipherFor(seed: string, rel: string): ReturnType<typeof createCipheriv> {
  const key = createHash('sha256').update(`bench-seed:${seed}`).digest();
  const iv = createHash('sha256').update(rel).digest().subarray(0, 16);
  return createCipheriv('aes-256-ctr', key, iv);
}

/** The bytes of a small file, in memory. */
export function contentOf(seed: string, spec: FileSpec): Buffer {
  return cipherFor(seed, spec.rel).update(Buffer.alloc(spec.size));
}

/** Writes every file under `dir`. Small files are written synchronously (fastest for 100k of them). */
export async function generate(dir: string, specs: readonly FileSpec[], seed: string): Promise<void> {
  const made = new Set<string>();
  for (const spec of specs) {
    const path = join(dir, spec.rel);
    const parent = dirname(path);
    if (!made.has(parent)) {
      mkdirSync(parent, { recursive: true });
      made.add(parent);
    }
    if (spec.size <= CHUNK) writeFileSync(path, contentOf(seed, spec));
    else await writeLarge(path, spec, seed);
  }
}

/** Writes one file to `path` with the content `spec.rel` has under `seed`. */
export async function writeFileFor(path: string, spec: FileSpec, seed: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  if (spec.size <= CHUNK) {
    const handle = await open(path, 'w');
    try {
      await handle.writeFile(contentOf(seed, spec));
    } finally {
      await handle.close();
    }
  } else {
    await writeLarge(path, spec, seed);
  }
}

async function writeLarge(path: string, spec: FileSpec, seed: string): Promise<void> {
  const cipher = cipherFor(seed, spec.rel);
  const handle = await open(path, 'w');
  try {
    let left = spec.size;
    while (left > 0) {
      const n = Math.min(CHUNK, left);
      const block = cipher.update(n === CHUNK ? ZEROS : ZEROS.subarray(0, n));
      await handle.write(block, 0, block.length);
      left -= n;
    }
  } finally {
    await handle.close();
  }
}

export function totalBytes(specs: readonly FileSpec[]): number {
  return specs.reduce((sum, spec) => sum + spec.size, 0);
}
