/** The message of anything thrown, for a log line or a report. */
export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
