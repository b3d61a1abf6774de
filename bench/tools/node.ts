/**
 * The Node that runs ours and the bare uploader: the one running the bench, or another major
 * (`--node 24`) installed from npm into .tools/node-<major> on first use (the `node` package on
 * npm ships the binary): the folder `npm run test:node` installs into, so the two share one
 * download. The official CLI's Node 22 comes the same way, into bench/.tools with the CLI.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { sqlitePackagesFor } from '../../src/journal/sqlite.js';
import { REPO_ROOT } from '../lib/paths.js';

export interface NodeBinary {
  path: string;
  /** `process.version` of that binary, e.g. v24.21.0. */
  version: string;
}

export function runningNode(): NodeBinary {
  return { path: process.execPath, version: process.version };
}

/** The version of the Node binary at `path` if it is there and of that major. */
export function nodeVersionAt(path: string, major: number): string | undefined {
  if (!existsSync(path)) return undefined;
  const probe = spawnSync(path, ['--version'], { encoding: 'utf8' });
  const version = probe.stdout.trim();
  return probe.status === 0 && version.startsWith(`v${major}.`) ? version : undefined;
}

/** `npm install --prefix <prefix> <packages>`; the caller checks what it installed. */
export function npmInstall(prefix: string, packages: string[]): number | null {
  const npm = spawnSync('npm', ['install', '--prefix', prefix, '--no-audit', '--no-fund', '--loglevel=error', ...packages], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  return npm.status;
}

/** Node `major` for ours: the running one if it is that major, else installed into .tools/node-<major>. */
export function ensureNode(major: number, log: (message: string) => void): NodeBinary {
  const running = Number(process.versions.node.split('.')[0]);
  if (major === running) return runningNode();
  const prefix = join(REPO_ROOT, '.tools', `node-${major}`);
  const path = join(prefix, 'node_modules', 'node', 'bin', 'node');
  let version = nodeVersionAt(path, major);
  if (!version) {
    log(`installing node@${major} into .tools/node-${major} (once) ...`);
    const status = npmInstall(prefix, [`node@${major}`]);
    version = nodeVersionAt(path, major);
    if (!version) throw new Error(`could not install node@${major} into ${prefix} (npm exited with ${status})`);
  }
  // This install built better-sqlite3 12 for the running Node only; 13 needs no build.
  if (sqlitePackagesFor(major, Number.POSITIVE_INFINITY)[0] === 'better-sqlite3-12') {
    log(
      `bench: the installed better-sqlite3 12 is built for Node ${running}: on Node ${major} ours falls back to 13, ` +
        `which needs Node 22.14 or later, where an install made with Node ${major} would use 12`,
    );
  }
  return { path, version };
}
