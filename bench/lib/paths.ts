/** Where things are: the repository, the bench's own folders. */
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const BENCH_DIR = join(REPO_ROOT, 'bench');
export const TOOLS_DIR = join(BENCH_DIR, '.tools');
export const RESULTS_DIR = join(BENCH_DIR, 'results');
export const OUR_CLI = join(REPO_ROOT, 'dist', 'cli.js');
export const DOCS_MD = join(REPO_ROOT, 'docs', 'BENCHMARKS.md');
export const DOCS_SVG = join(REPO_ROOT, 'docs', 'benchmarks.svg');
