import { describe, expect, it } from 'vitest';
import { fileNameVerdict, folderNameVerdict } from '../../src/pipeline/filter.js';

const extensions: ReadonlySet<string> = new Set(['.jpg', '.jpeg', '.heic', '.mp4', '.mov', '.dng']);

describe('fileNameVerdict', () => {
  it.each([
    ['IMG_0001.jpg'],
    ['IMG_0001.JPG'],
    ['clip.Mov'],
    ['holiday 2024 (1).heic'],
    ['raw.final.DNG'],
    ['~photo.jpg'], // a tilde alone is an ordinary name; only `~$` marks a lock file
    ['photo.part.jpg'], // only the last extension counts
  ])('accepts %s', (name) => {
    expect(fileNameVerdict(name, extensions)).toBe('ok');
  });

  it.each([
    ['.DS_Store'],
    ['._IMG_0001.jpg'], // AppleDouble resource fork
    ['.syncthing.IMG_0001.jpg.tmp'],
    ['.hidden.jpg'],
    ['.jpg'],
  ])('calls %s hidden', (name) => {
    expect(fileNameVerdict(name, extensions)).toBe('hidden');
  });

  it.each([
    ['IMG_0001.jpg.part'],
    ['video.mp4.crdownload'],
    ['IMG_0001.jpg.tmp'],
    ['IMG_0001.JPG.TMP'],
    ['clip.mov.download'],
    ['clip.mov.partial'],
    ['~$IMG_0001.jpg'],
  ])('calls %s partial', (name) => {
    expect(fileNameVerdict(name, extensions)).toBe('partial');
  });

  it.each([['Thumbs.db'], ['thumbs.db'], ['desktop.ini'], ['Desktop.ini'], ['ehthumbs.db']])(
    'calls %s system',
    (name) => {
      expect(fileNameVerdict(name, extensions)).toBe('system');
    },
  );

  it.each([['notes.txt'], ['README'], ['photo.'], ['photo.jpg~'], ['archive.zip'], ['photo.jpg.bak']])(
    'calls %s unsupported',
    (name) => {
      expect(fileNameVerdict(name, extensions)).toBe('unsupported');
    },
  );

  it('uses only the extensions it is given', () => {
    expect(fileNameVerdict('IMG_0001.png', extensions)).toBe('unsupported');
    expect(fileNameVerdict('IMG_0001.png', new Set(['.png']))).toBe('ok');
    expect(fileNameVerdict('IMG_0001.jpg', new Set())).toBe('unsupported');
  });
});

describe('folderNameVerdict', () => {
  it.each([['2024'], ['Holiday photos'], ['eaDir'], ['recycle'], ['DCIM']])('accepts %s', (name) => {
    expect(folderNameVerdict(name)).toBe('ok');
  });

  it.each([['.git'], ['.Trashes'], ['.stversions'], ['.Spotlight-V100']])('calls %s hidden', (name) => {
    expect(folderNameVerdict(name)).toBe('hidden');
  });

  it.each([
    ['@eaDir'],
    ['@EADIR'],
    ['#recycle'],
    ['#snapshot'],
    ['$RECYCLE.BIN'],
    ['$Recycle.Bin'],
    ['lost+found'],
    ['System Volume Information'],
  ])('calls %s system', (name) => {
    expect(folderNameVerdict(name)).toBe('system');
  });
});
