import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/support/logger.js';

const KEY = 'logger-secret-KEY-51c0de';

/** A destination that keeps what is written to it. */
function collecting(): { stream: Writable; text: () => string } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer | string, _encoding, done) {
      chunks.push(String(chunk));
      done();
    },
  });
  return { stream, text: () => chunks.join('') };
}

describe('createLogger', () => {
  for (const format of ['json', 'pretty'] as const) {
    it(`${format}: never writes a secret, wherever a line holds it`, () => {
      const { stream, text } = collecting();
      const logger = createLogger({ level: 'info', format, destination: stream, secrets: [KEY] });
      logger.warn({ url: `http://nas/${KEY}/api` }, `GET /${KEY}/api/server/version answered 404`);
      logger.error({ err: new Error(`token=${KEY}`) }, 'failed');
      expect(text()).toContain('GET /[hidden]/api/server/version answered 404');
      expect(text()).not.toContain(KEY);
    });
  }

  it('pretty: a file name with a newline in it stays on its line', () => {
    const { stream, text } = collecting();
    createLogger({ level: 'info', format: 'pretty', destination: stream }).info('uploaded new\nINFO: forged.jpg');
    expect(text().trimEnd().split('\n')).toHaveLength(1);
    expect(text()).toContain('uploaded new\\nINFO: forged.jpg');
  });

  it('writes lines as they are without secrets to hide', () => {
    const { stream, text } = collecting();
    createLogger({ level: 'info', format: 'json', destination: stream }).info('uploaded IMG_0001.jpg');
    expect(JSON.parse(text())).toMatchObject({ level: 30, msg: 'uploaded IMG_0001.jpg' });
  });
});
