import { lastedMs, type Problem } from '../support/problems.js';

/** How long a problem may last before `health` counts it, by default: Immich restarting for an update takes about a minute. */
export const DEFAULT_HEALTH_GRACE_SECONDS = 300;

export interface HealthVerdict {
  healthy: boolean;
  /** One line for a container's health log or a monitor. */
  line: string;
}

/**
 * `health`: healthy while an uploader runs with this state folder and none of its problems has
 * lasted longer than `graceMs` (a container's health check, a monitor).
 */
export function judgeHealth(input: {
  running: boolean;
  problems: Problem[];
  /** The system's time, and the seconds since boot (`os.uptime()`). */
  now: number;
  uptime: number;
  graceMs: number;
  directory: string;
}): HealthVerdict {
  if (!input.running) return { healthy: false, line: `unhealthy: no uploader is running with STATE_DIRECTORY ${input.directory}` };
  const lasting = input.problems.map((problem) => ({ problem, forMs: lastedMs(problem, input.now, input.uptime) }));
  const described = (list: typeof lasting): string =>
    list.map(({ problem, forMs }) => `${problem.message} (for ${formatDuration(forMs)}, since ${problem.since})`).join('; ');
  const serious = lasting.filter(({ forMs }) => forMs > input.graceMs);
  if (serious.length > 0) return { healthy: false, line: `unhealthy: ${described(serious)}` };
  if (lasting.length > 0) {
    return { healthy: true, line: `healthy for now: ${described(lasting)}; unhealthy if it lasts over ${formatDuration(input.graceMs)}` };
  }
  return { healthy: true, line: 'healthy: an uploader is running, and nothing keeps it from its work' };
}

/** `45 s`, `12 min`, `3 h 5 min`. */
export function formatDuration(ms: number): string {
  const seconds = Math.round(ms / 1000);
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min`;
  const rest = minutes % 60;
  return `${Math.floor(minutes / 60)} h${rest > 0 ? ` ${rest} min` : ''}`;
}
