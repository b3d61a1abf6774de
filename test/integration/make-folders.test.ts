import { existsSync, statSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { makeFoldersSync } from '../../src/support/paths.js';
import { makeTempDir } from '../helpers/temp-dir.js';

describe('makeFoldersSync', () => {
  let temp: { path: string; remove: () => Promise<void> };
  beforeEach(async () => {
    temp = await makeTempDir('iau-make-folders-');
  });
  afterEach(async () => {
    await temp.remove();
  });

  it('makes every missing level, with the mode asked for, and leaves a folder that is there', async () => {
    const deep = join(temp.path, 'a', 'b', 'c');
    makeFoldersSync(deep, 0o700);
    expect(statSync(deep).isDirectory()).toBe(true);
    expect(statSync(join(temp.path, 'a')).mode & 0o777).toBe(0o700);
    await mkdir(join(temp.path, 'there'));
    makeFoldersSync(join(temp.path, 'there'));
    expect(statSync(join(temp.path, 'there')).isDirectory()).toBe(true);
  });

  it('throws where a file is in the way', async () => {
    await writeFile(join(temp.path, 'file'), 'x');
    expect(() => makeFoldersSync(join(temp.path, 'file'))).toThrow(/EEXIST/);
    expect(() => makeFoldersSync(join(temp.path, 'file', 'archive'))).toThrow(/ENOTDIR/);
  });

  it.skipIf(!existsSync('/proc/self'))('throws at once where the file system refuses new folders with ENOENT (where recursive mkdir spins)', () => {
    expect(() => makeFoldersSync('/proc/iau-no-such/archive')).toThrow(/ENOENT/);
  });
});
