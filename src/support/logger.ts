import { createRequire } from 'node:module';
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import type PinoPretty from 'pino-pretty';
import type { LogFormat, LogLevel } from '../config.js';

export type { Logger };

/**
 * The one logger of a run: pino, pretty on a terminal and JSON lines otherwise. Writes are
 * synchronous so the last lines before an exit are never lost; at one line per file that costs
 * nothing measurable.
 */
export function createLogger(options: {
  level: LogLevel;
  format: LogFormat;
  /** Defaults to standard output. */
  destination?: NodeJS.WritableStream & { isTTY?: boolean };
  /** Never written, whatever a line holds (the API key): replaced by `[hidden]`. */
  secrets?: readonly string[];
}): Logger {
  const output = options.destination ?? process.stdout;
  // Standard output as pino writes it fastest, synchronously (the last lines before an exit);
  // made only where it is written to.
  const target = (): NodeJS.WritableStream | ReturnType<typeof pino.destination> =>
    output === process.stdout ? pino.destination({ dest: 1, sync: true }) : output;
  const secrets = (options.secrets ?? []).filter((secret) => secret.length > 0);
  const scrubbed = secrets.length > 0 ? withoutSecrets(target(), secrets) : undefined;
  const usePretty = options.format === 'pretty' || (options.format === 'auto' && output.isTTY === true);
  const verbose = options.level === 'debug' || options.level === 'trace';
  const base = {
    level: options.level,
    base: undefined,
    // A stack helps a bug report, never a user (a folder it may not read, a full disk): only at debug.
    serializers: { err: (error: Error) => (verbose ? pino.stdSerializers.err(error) : withoutStack(pino.stdSerializers.err(error))) },
    // The key is never logged on purpose; this is the belt to that braces.
    redact: { paths: ['apiKey', '*.apiKey', 'headers["x-api-key"]', '*.headers["x-api-key"]'], censor: '[hidden]' },
  };
  if (usePretty) {
    // Loaded only when used: JSON logging (Docker, systemd, pipes) starts 20 ms sooner without it.
    const pretty = createRequire(import.meta.url)('pino-pretty') as typeof PinoPretty;
    return pino(
      base,
      pretty({
        destination: scrubbed ?? output,
        sync: true,
        colorize: output.isTTY === true,
        translateTime: 'SYS:HH:MM:ss',
        ignore: 'pid,hostname',
        // On a terminal the message says it all; the fields are for JSON consumers (and debug).
        hideObject: !verbose,
        // One line per message: a file name with a newline in it must not start a line of its own.
        messageFormat: (log, messageKey) => oneLineMessage(log[messageKey]),
      }),
    );
  }
  return pino({ ...base, timestamp: pino.stdTimeFunctions.isoTime }, scrubbed ?? target());
}

/**
 * Writes through to `output`, at once, with every secret replaced: the key is never logged on
 * purpose, and this is the last line of defence against a server, an address or an error that
 * repeats it.
 */
function withoutSecrets(target: { write(text: string): unknown }, secrets: readonly string[]): Writable {
  return new Writable({
    write(chunk: Buffer | string, _encoding, done) {
      target.write(hideSecrets(String(chunk), secrets));
      done();
    },
  });
}

/** Control characters (a newline in a file name) shown as escapes, as JSON lines show them. */
function oneLineMessage(message: unknown): string {
  const text = typeof message === 'string' ? message : JSON.stringify(message) ?? '';
  let shown = '';
  for (const char of text) shown += char < ' ' ? JSON.stringify(char).slice(1, -1) : char;
  return shown;
}

export function hideSecrets(text: string, secrets: readonly string[]): string {
  let result = text;
  for (const secret of secrets) if (secret.length > 0) result = result.split(secret).join('[hidden]');
  return result;
}

function withoutStack(serialized: ReturnType<typeof pino.stdSerializers.err>): Record<string, unknown> {
  const { stack: _stack, ...rest } = serialized;
  return rest;
}
