/**
 * Callers waiting for something to become true (a stage to be idle, room in it). Each is woken at
 * the next `wakeAll()` and looks at its condition again.
 */
export class Waiters {
  #waiting: (() => void)[] = [];

  add(wake: () => void): void {
    this.#waiting.push(wake);
  }

  /** Resolves at the next `wakeAll()`. */
  next(): Promise<void> {
    return new Promise((resolve) => this.add(resolve));
  }

  wakeAll(): void {
    if (this.#waiting.length === 0) return;
    const waiting = this.#waiting;
    this.#waiting = [];
    for (const wake of waiting) wake();
  }
}
