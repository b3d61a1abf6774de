import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';

export function sha1(bytes: Buffer): string {
  return createHash('sha1').update(bytes).digest('hex');
}

/** Writes files with random content (so every checksum differs) and returns what was written. */
export async function writeMedia(root: string, names: string[], size = 2048): Promise<Map<string, Buffer>> {
  const written = new Map<string, Buffer>();
  for (const name of names) {
    const bytes = randomBytes(size);
    await mkdir(dirname(join(root, name)), { recursive: true });
    await writeFile(join(root, name), bytes);
    written.set(name, bytes);
  }
  return written;
}

export async function readIfExists(path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path);
  } catch {
    return undefined;
  }
}
