import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Mounts folder `source` at `target` as well (a bind mount): a card or disk appearing there. */
export function bindMount(source: string, target: string): void {
  execFileSync('mount', ['--bind', source, target], { stdio: 'ignore' });
}

/** Makes the mount at `target` read-only: a disk the kernel remounted read-only after errors. */
export function remountReadOnly(target: string): void {
  execFileSync('mount', ['-o', 'remount,ro,bind', target], { stdio: 'ignore' });
}

/** Makes the mount at `target` writable again: a card whose lock switch is turned off. */
export function remountReadWrite(target: string): void {
  execFileSync('mount', ['-o', 'remount,rw,bind', target], { stdio: 'ignore' });
}

export function unmount(target: string): void {
  execFileSync('umount', [target], { stdio: 'ignore' });
}

/** Whether this process may mount (root, with the right to mount): tests that need it are skipped without. */
export function canMount(): boolean {
  const base = mkdtempSync(join(tmpdir(), 'iau-can-mount-'));
  try {
    bindMount(base, base);
    unmount(base);
    return true;
  } catch {
    return false;
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
}
