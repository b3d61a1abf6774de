/**
 * The container image (Dockerfile) and deploy/compose.yaml. No Docker engine runs here, so the
 * image cannot be built: the test reads both files and checks what a build and a run rely on.
 * Then it does what the build stage does with what it copies (the installed packages stand in
 * for `npm ci`), and runs the image's CMD as the container would, in a tree laid out like the
 * image's /app (that build, package.json, and the production packages alone), with the image's
 * environment, then compose's, and the volumes as temporary folders.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, cp, mkdir, readFile, symlink } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { startFakeImmich, type FakeImmich } from '../fakes/immich-server.js';
import { captureOutput } from '../helpers/cli.js';
import { writeMedia } from '../helpers/media.js';
import { makeTempDir } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait-for.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const COMPOSE = join(ROOT, 'deploy', 'compose.yaml');
const KEY = 'docker-test-key-81c4';

let temp: { path: string; remove: () => Promise<void> };
let server: FakeImmich | undefined;

beforeEach(async () => {
  temp = await makeTempDir('iau-docker-');
});
afterEach(async () => {
  await server?.close();
  await temp.remove();
});

interface Instruction {
  command: string;
  args: string;
}

/** The Dockerfile's instructions, lines continued with `\` joined and comments left out. */
async function dockerfile(): Promise<Instruction[]> {
  const text = (await readFile(join(ROOT, 'Dockerfile'), 'utf8')).replace(/\\\n/g, ' ');
  return text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => {
      const [command = '', ...rest] = line.split(/\s+/);
      return { command: command.toUpperCase(), args: rest.join(' ') };
    });
}

/** The instructions of each stage, from its FROM on. */
function stages(instructions: Instruction[]): Instruction[][] {
  const found: Instruction[][] = [];
  for (const instruction of instructions) {
    if (instruction.command === 'FROM') found.push([]);
    found[found.length - 1]?.push(instruction);
  }
  return found;
}

/** `ENV A=1 B=2` lines of a stage, as one map. */
function envOf(stage: Instruction[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const { args } of stage.filter((instruction) => instruction.command === 'ENV')) {
    for (const pair of args.split(/\s+/)) {
      const [name = '', ...value] = pair.split('=');
      env[name] = value.join('=');
    }
  }
  return env;
}

interface ComposeService {
  build: string;
  env_file: string;
  environment: Record<string, string>;
  volumes: string[];
  stop_grace_period: string;
  restart: string;
  logging: { driver: string; options: Record<string, string> };
}

async function composeService(): Promise<ComposeService> {
  const compose = parseYaml(await readFile(COMPOSE, 'utf8')) as { services: Record<string, ComposeService> };
  const service = compose.services['immich-auto-uploader'];
  if (service === undefined) throw new Error('compose.yaml has no immich-auto-uploader service');
  return service;
}

describe('the Dockerfile', () => {
  it('builds in a stage of its own from the sources it copies, on a Node the uploader supports, and runs as the user node', async () => {
    const [build = [], run = []] = stages(await dockerfile());
    for (const stage of [build, run]) expect(stage[0]?.args).toMatch(/^node:(20|22|24)-[a-z]+-slim\b/);
    // What the build stage copies from the context exists, and .dockerignore lets it in.
    const ignored = (await readFile(join(ROOT, '.dockerignore'), 'utf8')).split('\n').map((line) => line.trim());
    const copied = build.filter((instruction) => instruction.command === 'COPY').flatMap(({ args }) => args.split(/\s+/).slice(0, -1));
    expect(copied).toEqual(['package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json', 'src']);
    for (const source of copied) {
      expect(existsSync(join(ROOT, source)), source).toBe(true);
      expect(ignored, source).not.toContain(source);
    }
    // The key stays out of the build context.
    expect(ignored).toContain('.env');
    expect(build.map(({ command, args }) => `${command} ${args}`)).toContain('RUN npm run build && npm prune --omit=dev');

    expect(run.find((instruction) => instruction.command === 'USER')?.args).toBe('node');
    expect(run.find((instruction) => instruction.command === 'WORKDIR')?.args).toBe('/app');
    expect(envOf(run)).toMatchObject({ WATCH_DIRECTORIES: '/watch', ARCHIVE_DIRECTORY: '/archive', STATE_DIRECTORY: '/state' });
  });

  it("leaves /state writable by any user, before it becomes a volume: a new named volume takes its mode, and compose's `user:` may be any uid", async () => {
    const [, run = []] = stages(await dockerfile());
    const volume = run.findIndex((instruction) => instruction.command === 'VOLUME');
    const steps = run.slice(0, volume).filter((instruction) => instruction.command === 'RUN').flatMap(({ args }) => args.split('&&').map((step) => step.trim()));
    const mode = steps.map((step) => /^chmod ([0-7]{3,4}) (?:.* )?\/state(?: |$)/.exec(step)?.[1]).find((found) => found !== undefined);
    expect(mode, 'a chmod of /state before VOLUME').toBeDefined();
    expect(Number.parseInt(mode ?? '0', 8) & 0o777).toBe(0o777);
  });
});

describe('deploy/compose.yaml', () => {
  it('builds the Dockerfile, gives the container the folders the image expects, time to stop, and a log of bounded size', async () => {
    const service = await composeService();
    expect(existsSync(join(resolve(dirname(COMPOSE), service.build), 'Dockerfile'))).toBe(true);
    expect(resolve(dirname(COMPOSE), service.env_file)).toBe(join(ROOT, '.env'));
    const [, run = []] = stages(await dockerfile());
    const image = envOf(run);
    for (const name of ['WATCH_DIRECTORIES', 'ARCHIVE_DIRECTORY', 'STATE_DIRECTORY']) {
      expect(service.environment[name], name).toBe(image[name]);
      expect(service.volumes.map((volume) => volume.split(':')[1]), name).toContain(image[name]);
    }
    expect(service.restart).toBe('unless-stopped');
    // A daemon that runs for months: its log is rotated, at most 30 MB.
    expect(service.logging).toEqual({ driver: 'json-file', options: { 'max-size': '10m', 'max-file': '3' } });
    // Longer than the default SHUTDOWN_GRACE_SECONDS (30), so that uploads in progress may finish.
    expect(Number(/^(\d+)s$/.exec(service.stop_grace_period)?.[1])).toBeGreaterThan(30);
  });
});

/**
 * The production packages (what `npm prune --omit=dev` keeps), linked into `nodeModules`: the
 * top-level ones, each with whatever it nests.
 */
async function linkProductionPackages(nodeModules: string): Promise<void> {
  const listed = spawnSync('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: ROOT, encoding: 'utf8' }).stdout;
  const top = join(ROOT, 'node_modules');
  for (const path of listed.split('\n')) {
    const name = relative(top, path);
    if (path === '' || name.startsWith('..') || /node_modules/.test(name) || name.split('/').length > (name.startsWith('@') ? 2 : 1)) continue;
    await mkdir(dirname(join(nodeModules, name)), { recursive: true });
    await symlink(path, join(nodeModules, name));
  }
}

/**
 * Does in `folder` what the build stage does: copies what it copies, and runs its commands but
 * `apt-get` (the image's system packages, for compiling), `npm ci` (the packages installed
 * here are linked in its place) and `npm prune` (done by {@link linkProductionPackages} for the
 * run).
 */
async function buildStage(build: Instruction[], folder: string): Promise<void> {
  await mkdir(folder);
  await symlink(join(ROOT, 'node_modules'), join(folder, 'node_modules'));
  for (const { command, args } of build) {
    if (command === 'COPY') {
      // `COPY a b ./` copies into the folder; `COPY src ./src` copies to that path.
      const sources = args.split(/\s+/);
      const target = sources.pop() ?? '';
      for (const from of sources) await cp(join(ROOT, from), join(folder, target, target.endsWith('/') ? basename(from) : ''), { recursive: true });
    }
    if (command !== 'RUN') continue;
    for (const step of args.split('&&').map((part) => part.trim())) {
      if (step === 'npm ci' || step.startsWith('npm prune') || step.startsWith('apt-get') || step.startsWith('rm -rf /var/lib/apt')) continue;
      const ran = spawnSync('sh', ['-c', step], { cwd: folder, encoding: 'utf8' });
      expect(ran.status, `${step}: ${ran.stdout}${ran.stderr}`).toBe(0);
    }
  }
}

describe('the image, run as its CMD says', () => {
  it('builds as its build stage says, then uploads and archives with only the production packages, from the folders compose mounts, and stops cleanly', async () => {
    server = await startFakeImmich({ major: 3, keys: { [KEY]: { name: 'docker', permissions: ['asset.upload'] } } });
    const [build = [], run = []] = stages(await dockerfile());
    await buildStage(build, join(temp.path, 'build'));
    const service = await composeService();
    // The container's folders, here.
    const app = join(temp.path, 'app');
    const volumes: Record<string, string> = { '/watch': join(temp.path, 'watch'), '/archive': join(temp.path, 'archive'), '/state': join(temp.path, 'state') };
    for (const folder of [app, join(temp.path, 'home'), ...Object.values(volumes)]) await mkdir(folder, { recursive: true });
    const here = (value: string): string => volumes[value] ?? value;
    // /app as the image has it: package.json, the build, the production packages.
    await copyFile(join(ROOT, 'package.json'), join(app, 'package.json'));
    await symlink(join(temp.path, 'build', 'dist'), join(app, 'dist'));
    await linkProductionPackages(join(app, 'node_modules'));

    const environment = { ...envOf(run), IMMICH_API_URL: server.url, IMMICH_API_KEY: KEY, ...service.environment, FILE_STABILITY_WAIT_SECONDS: '0.3' };
    const [node, ...args] = JSON.parse(run.find((instruction) => instruction.command === 'CMD')?.args ?? '[]') as string[];
    expect(node).toBe('node');
    // The links stay links, so that only the packages linked above are found, as in the image.
    const containerEnv = { PATH: process.env.PATH ?? '', HOME: join(temp.path, 'home'), ...Object.fromEntries(Object.entries(environment).map(([name, value]) => [name, here(value)])) };
    const child = spawn(process.execPath, ['--preserve-symlinks', '--preserve-symlinks-main', ...args], { cwd: app, env: containerEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    const { stdout, stderr, exited } = captureOutput(child);
    try {
      await waitFor(() => stdout().includes('"msg":"watching'), { message: () => `the daemon watching; stdout:\n${stdout()}\nstderr:\n${stderr()}` });
      await writeMedia(here('/watch'), ['IMG_0001.jpg']);
      await waitFor(() => existsSync(join(here('/archive'), 'IMG_0001.jpg')), { message: 'IMG_0001.jpg uploaded and archived' });
      expect(server.assets).toHaveLength(1);
      expect(existsSync(join(here('/state'), 'journal.db'))).toBe(true);
      // Docker runs the health check in the running container, as its user, with its environment.
      const check = run.find((instruction) => instruction.command === 'HEALTHCHECK')?.args ?? '';
      const [checkNode, ...checkArgs] = JSON.parse(check.slice(check.indexOf('CMD ') + 4)) as string[];
      expect(checkNode).toBe('node');
      const health = spawnSync(process.execPath, ['--preserve-symlinks', '--preserve-symlinks-main', ...checkArgs], { cwd: app, env: containerEnv, encoding: 'utf8' });
      expect([health.status, health.stdout, health.stderr]).toEqual([0, 'healthy: an uploader is running, and nothing keeps it from its work\n', '']);
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toEqual({ code: 0, signal: null });
    expect(stderr()).toBe('');
  });
});
