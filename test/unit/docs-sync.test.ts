/**
 * The README's options table, .env.example and `--help` are derived from src/options.ts. These
 * tests fail when a generated file was not regenerated (run `node --import tsx scripts/gen-docs.ts`)
 * and when what the docs promise (defaults, flag names) differs from what the code does.
 */
import { mkdir, readFile, realpath } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import dotenv from 'dotenv';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig, redactedConfig } from '../../src/config.js';
import {
  addOptions,
  flagWithValue,
  OPTIONS,
  renderEnvExample,
  renderOptionsTable,
  spliceOptionsTable,
  TABLE_END,
  TABLE_START,
} from '../../src/options.js';
import { makeTempDir } from '../helpers/temp-dir.js';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const regenerate = 'out of date: run `node --import tsx scripts/gen-docs.ts`';

describe('generated files are in sync with src/options.ts', () => {
  it('README.md holds the rendered table between the markers', async () => {
    const readme = await readFile(join(repo, 'README.md'), 'utf8');
    expect(readme, regenerate).toBe(spliceOptionsTable(readme));
    const between = readme.slice(readme.indexOf(TABLE_START) + TABLE_START.length, readme.indexOf(TABLE_END));
    expect(between.trim()).toBe(renderOptionsTable().trim());
  });

  it('.env.example is exactly the rendered file', async () => {
    expect(await readFile(join(repo, '.env.example'), 'utf8'), regenerate).toBe(renderEnvExample());
  });
});

describe('the declarations', () => {
  it('have unique keys, variables and flags', () => {
    for (const field of ['key', 'env', 'flag'] as const) {
      const values = OPTIONS.map((o) => o[field]);
      expect(new Set(values).size, field).toBe(values.length);
    }
  });

  it('use keys that commander derives from the flags, so opts() lines up with loadConfig', () => {
    for (const spec of OPTIONS) {
      expect(new Option(flagWithValue(spec)).attributeName()).toBe(spec.key);
    }
  });

  it('give every option either a default, a requirement or an example', () => {
    for (const spec of OPTIONS) {
      const o: { default?: string; required?: unknown; example?: string } = spec;
      expect(o.default !== undefined || o.required !== undefined || o.example !== undefined, spec.env).toBe(true);
    }
  });
});

describe('--help', () => {
  function help(): string {
    const command = new Command('immich-auto-uploader').configureHelp({ helpWidth: 1000 });
    addOptions(command);
    return command.helpInformation();
  }

  it('shows each flag with its description, variable and default', () => {
    const text = help();
    expect(text).toMatch(
      /--watch-directories <dirs> +Folders to watch, comma-separated \(env WATCH_DIRECTORIES, default: ~\/Downloads,~\/Pictures\/Camera\)/,
    );
    expect(text).toMatch(/--api-url <url> +URL of the Immich server, with or without \/api \(env IMMICH_API_URL, required\)/);
    expect(text).toMatch(/--watch-recursive \[bool\] +.*\(env WATCH_RECURSIVE, default: true\)/);
    for (const spec of OPTIONS) {
      expect(text).toContain(flagWithValue(spec));
      expect(text).toContain(`env ${spec.env}`);
    }
  });

  it('sets no commander defaults, so opts() holds only what the user typed', () => {
    const command = new Command();
    addOptions(command);
    command.parse([], { from: 'user' });
    expect(command.opts()).toEqual({});
  });
});

describe('.env.example', () => {
  let tmp: { path: string; remove: () => Promise<void> };
  let home: string;

  beforeEach(async () => {
    tmp = await makeTempDir('iau-docs-');
    home = join(await realpath(tmp.path), 'home');
    await mkdir(join(home, 'Downloads'), { recursive: true });
    await mkdir(join(home, 'Pictures', 'Camera'), { recursive: true });
  });

  afterEach(async () => {
    await tmp.remove();
  });

  it('sets only the required variables, each to its placeholder', () => {
    const parsed = dotenv.parse(renderEnvExample());
    expect(parsed).toEqual({ IMMICH_API_URL: 'http://immich.local:2283', IMMICH_API_KEY: 'your-api-key' });
  });

  it('documents every variable with a comment', () => {
    const text = renderEnvExample();
    for (const spec of OPTIONS) {
      expect(text).toContain(`# ${spec.description}.\n`);
      expect(text).toMatch(new RegExp(`^(# )?${spec.env}=`, 'm'));
    }
  });

  it('documents the defaults the code applies: uncommenting every default changes nothing', () => {
    const uncommented = renderEnvExample().replace(/^# ([A-Z_]+=)/gm, '$1');
    const withDefaults = dotenv.parse(uncommented);
    // The key-file line is an example, not a default, and would clash with IMMICH_API_KEY.
    delete withDefaults.IMMICH_API_KEY_FILE;
    expect(Object.keys(withDefaults)).toHaveLength(OPTIONS.length - 1);

    const base = { flags: {}, cwd: tmp.path, homeDir: home, envFile: join(tmp.path, 'absent.env') };
    const required = dotenv.parse(renderEnvExample());
    const fromDefaults = loadConfig({ ...base, env: required }).config;
    const fromExample = loadConfig({ ...base, env: withDefaults }).config;
    expect(redactedConfig(fromExample)).toEqual(redactedConfig(fromDefaults));
  });
});
