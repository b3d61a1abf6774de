/**
 * The official Immich CLI (`@immich/cli` 3.2.2), on the Node 22 it requires. Both are installed
 * from npm into bench/.tools (gitignored) on first use, never into the project's dependencies:
 * the `node` package on npm ships the Node binary as a registry package.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TOOLS_DIR } from '../lib/paths.js';
import { runChecked, type Exit } from '../lib/proc.js';
import type { BenchServer } from '../lib/server.js';

export const OFFICIAL_CLI_VERSION = '3.2.2';
const NODE_PACKAGE = 'node@22';

export interface OfficialCli {
  node: string;
  nodeVersion: string;
  /** The CLI's entry script (bin/immich). */
  entry: string;
  version: string;
}

function installed(): OfficialCli | undefined {
  const node = join(TOOLS_DIR, 'node_modules', 'node', 'bin', 'node');
  const cliDir = join(TOOLS_DIR, 'node_modules', '@immich', 'cli');
  const entry = join(cliDir, 'bin', 'immich');
  if (!existsSync(node) || !existsSync(entry)) return undefined;
  const { version } = JSON.parse(readFileSync(join(cliDir, 'package.json'), 'utf8')) as { version: string };
  if (version !== OFFICIAL_CLI_VERSION) return undefined;
  const probe = spawnSync(node, ['--version'], { encoding: 'utf8' });
  const nodeVersion = probe.stdout.trim();
  if (probe.status !== 0 || !nodeVersion.startsWith('v22.')) return undefined;
  return { node, nodeVersion, entry, version };
}

/** Installs the official CLI and Node 22 into bench/.tools unless they are already there. */
export function ensureOfficialCli(log: (message: string) => void): OfficialCli {
  const found = installed();
  if (found) return found;
  log(`installing ${NODE_PACKAGE} and @immich/cli@${OFFICIAL_CLI_VERSION} into bench/.tools (once) ...`);
  const npm = spawnSync(
    'npm',
    ['install', '--prefix', TOOLS_DIR, '--no-audit', '--no-fund', '--loglevel=error', NODE_PACKAGE, `@immich/cli@${OFFICIAL_CLI_VERSION}`],
    { stdio: ['ignore', 'inherit', 'inherit'] },
  );
  const after = installed();
  if (npm.status !== 0 || !after) {
    throw new Error(`could not install the official CLI into ${TOOLS_DIR} (npm exited with ${npm.status})`);
  }
  return after;
}

export interface OfficialRun {
  cli: OfficialCli;
  server: BenchServer;
  dir: string;
  concurrency: number;
  /** A temporary working and configuration folder. */
  cwd: string;
}

/** `immich upload --recursive --concurrency N --delete --no-progress DIR`, process start to exit. */
export async function runOfficial(run: OfficialRun): Promise<Exit> {
  const args = [run.cli.entry, 'upload', '--recursive', '--concurrency', String(run.concurrency), '--delete', '--no-progress', run.dir];
  return runChecked(run.cli.node, args, {
    cwd: run.cwd,
    env: {
      PATH: process.env.PATH,
      HOME: run.cwd,
      IMMICH_CONFIG_DIR: run.cwd,
      IMMICH_INSTANCE_URL: run.server.apiUrl,
      IMMICH_API_KEY: run.server.key,
    },
  });
}
