import busboy from 'busboy';
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

  it('frame a part that follows the file, from memory or after a file read from disk', async () => {
    const fields = { fileCreatedAt: '2024-05-01T12:00:00.000Z' };
    const after = { name: 'sidecarData', filename: 'a.jpg.xmp', contentType: 'application/xml', bytes: Buffer.from('<xmp/>') };
    const fromMemory = buildMultipart(fields, { name: 'assetData', filename: 'a.jpg', contentType: 'image/jpeg', bytes: Buffer.from('pixels') }, after);
    const fromDisk = buildMultipart(
      fields,
      { name: 'assetData', filename: 'a.jpg', contentType: 'image/jpeg', size: 6, open: () => Promise.reject(new Error('not read here')) },
      after,
    );
    if (!('buffers' in fromMemory) || !('head' in fromDisk)) throw new Error('expected one body of each kind');
    for (const [body, bytes] of [
      [fromMemory, Buffer.concat(fromMemory.buffers)],
      [fromDisk, Buffer.concat([fromDisk.head, Buffer.from('pixels'), fromDisk.tail])],
    ] as const) {
      expect(bytes.length).toBe(body.contentLength);
      const parts = await parse(body.contentType, bytes);
      expect(parts).toEqual([
        { name: 'fileCreatedAt', value: '2024-05-01T12:00:00.000Z' },
        { name: 'assetData', filename: 'a.jpg', value: 'pixels' },
        { name: 'sidecarData', filename: 'a.jpg.xmp', value: '<xmp/>' },
      ]);
    }
  });
});

/** The parts of a multipart body, in order, as busboy (the parser Immich's multer uses) reads them. */
function parse(contentType: string, body: Buffer): Promise<Array<{ name: string; filename?: string; value: string }>> {
  return new Promise((resolve, reject) => {
    const parts: Array<{ name: string; filename?: string; value: string }> = [];
    const parser = busboy({ headers: { 'content-type': contentType } });
    parser.on('field', (name, value) => parts.push({ name, value }));
    parser.on('file', (name, stream, info) => {
      const part = { name, filename: info.filename, value: '' };
      parts.push(part);
      stream.on('data', (chunk: Buffer) => (part.value += chunk.toString('utf8')));
    });
    parser.on('close', () => resolve(parts));
    parser.on('error', reject);
    parser.end(body);
  });
}
