import { describe, expect, it } from 'vitest';
import { buildMultipart, randomBoundary } from '../../src/immich/multipart.js';

describe('multipart boundaries', () => {
  it('are new for every body and carry 24 random bytes', () => {
    const seen = new Set(Array.from({ length: 1000 }, () => randomBoundary()));
    expect(seen.size).toBe(1000);
    for (const boundary of seen) expect(boundary).toMatch(/^----immich-auto-uploader-[0-9a-f]{48}-[0-9a-z]+$/);
  });

  it('delimit the body they are announced for', () => {
    const file = { name: 'assetData', filename: 'a.jpg', contentType: 'image/jpeg', bytes: Buffer.from('pixels') };
    const first = buildMultipart({ deviceId: 'd' }, file);
    const second = buildMultipart({ deviceId: 'd' }, file);
    expect(first.contentType).not.toBe(second.contentType);
    const boundary = first.contentType.split('boundary=')[1];
    const text = Buffer.concat('buffers' in first ? first.buffers : []).toString('utf8');
    expect(text.startsWith(`--${boundary}\r\n`)).toBe(true);
    expect(text.endsWith(`\r\n--${boundary}--\r\n`)).toBe(true);
  });
});
