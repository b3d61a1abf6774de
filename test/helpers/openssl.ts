import { execFileSync } from 'node:child_process';

/** Whether the `openssl` command is installed (tests that need it are skipped without it). */
export function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
