/**
 * Peak resident memory of another process, measured from outside: `/proc/<pid>/status` is read
 * every `intervalMs`. VmHWM is the kernel's own high-water mark of the resident set, so a peak
 * between two samples is not missed; only what happens in the last interval before exit can be.
 */
import { readFileSync } from 'node:fs';

export interface RssSampler {
  /** Highest VmHWM (or VmRSS) seen so far, in bytes; 0 if the process was never sampled. */
  readonly peakBytes: number;
  readonly samples: number;
  /** User + system CPU time at the last sample, in ms (clock ticks of 10 ms). */
  readonly cpuMs: number;
  stop(): void;
}

/** Reads VmRSS and VmHWM (bytes) of a live process; undefined once it has exited. */
export function readRss(pid: number): { rss: number; hwm: number } | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const kb = (field: string): number => {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
    return match?.[1] === undefined ? 0 : Number(match[1]) * 1024;
  };
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

/** utime + stime of a live process in ms; undefined once it has gone. */
export function readCpuMs(pid: number): number | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // Fields after the command name (which may hold spaces) start after the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  return Number.isFinite(ticks) ? ticks * 10 : undefined;
}

export function sampleRss(pid: number, intervalMs = 50): RssSampler {
  let peak = 0;
  let samples = 0;
  let cpuMs = 0;
  const sample = (): void => {
    const reading = readRss(pid);
    if (!reading) return;
    samples += 1;
    peak = Math.max(peak, reading.hwm, reading.rss);
    cpuMs = readCpuMs(pid) ?? cpuMs;
  };
  sample();
  const timer = setInterval(sample, intervalMs);
  return {
    get peakBytes() {
      return peak;
    },
    get samples() {
      return samples;
    },
    get cpuMs() {
      return cpuMs;
    },
    stop() {
      // One last look: the process may still be a zombie with its status readable.
      sample();
      clearInterval(timer);
    },
  };
}
