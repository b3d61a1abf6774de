/**
 * Small JSON files in the state folder that a start reads: hints about the archive, kept beside
 * the journal and not in it, since losing one costs only a slower or more careful start.
 */
import { readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** The file's value; undefined when it is missing or unreadable. */
export function readStateFile(directory: string, name: string): unknown {
  try {
    return JSON.parse(readFileSync(join(directory, name), 'utf8')) as unknown;
  } catch {
    return undefined;
  }
}

/**
 * Writes the file whole or not at all (a temporary renamed over it). Best effort: a file that
 * cannot be written is left as it was.
 */
export function writeStateFile(directory: string, name: string, value: unknown): void {
  const file = join(directory, name);
  const temporary = `${file}.tmp`;
  try {
    writeFileSync(temporary, `${JSON.stringify(value)}\n`, { mode: 0o600 });
    renameSync(temporary, file);
  } catch {
    try {
      unlinkSync(temporary);
    } catch {
      // Nothing was written.
    }
  }
}
