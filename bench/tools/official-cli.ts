/**
 * The official Immich CLI (`@immich/cli` 3.2.2), on the Node 22 it requires. Both are installed
 * from npm into bench/.tools (gitignored) on first use, never into the project's dependencies:
 * the `node` package on npm ships the Node binary as a registry package.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TOOLS_DIR } from '../lib/paths.js';
import { runChecked, type Exit } from '../lib/proc.js';
import type { BenchServer } from '../lib/server.js';
import { nodeVersionAt, npmInstall } from './node.js';

export const OFFICIAL_CLI_VERSION = '3.2.2';
const NODE_MAJOR = 22;

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
  if (!existsSync(entry)) return undefined;
  const { version } = JSON.parse(readFileSync(join(cliDir, 'package.json'), 'utf8')) as { version: string };
  if (version !== OFFICIAL_CLI_VERSION) return undefined;
  const nodeVersion = nodeVersionAt(node, NODE_MAJOR);
  return nodeVersion === undefined ? undefined : { node, nodeVersion, entry, version };
}

/** Installs the official CLI and Node 22 into bench/.tools unless they are already there. */
export function ensureOfficialCli(log: (message: string) => void): OfficialCli {
  const found = installed();
  if (found) return found;
  log(`installing node@${NODE_MAJOR} and @immich/cli@${OFFICIAL_CLI_VERSION} into bench/.tools (once) ...`);
  const status = npmInstall(TOOLS_DIR, [`node@${NODE_MAJOR}`, `@immich/cli@${OFFICIAL_CLI_VERSION}`]);
  const after = installed();
  if (status !== 0 || !after) throw new Error(`could not install the official CLI into ${TOOLS_DIR} (npm exited with ${status})`);
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
