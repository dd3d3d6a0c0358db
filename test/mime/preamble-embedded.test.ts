/**
 * A file embedded in a multipart's preamble or epilogue (shown by no client) is a finding; finding it
 * decodes nothing (parseMime detects with a budget of 0 bytes), so a preamble cannot make postern
 * allocate what its blocks would decode to.
 */
import { describe, expect, it } from 'vitest';
import { DEFAULT_MIME_LIMITS } from '../../src/limits.js';
import { findEmbedded, newDecodeBudget } from '../../src/mime/embedded.js';
import { parseMime } from '../../src/mime/parse.js';

const uu = (name: string): string => `begin 644 ${name}\r\n#34%H\r\n\`\r\nend\r\n`;

function multipart(preamble: string, epilogue = ''): Buffer {
  return Buffer.from(
    'From: a@example.com\r\nTo: b@example.com\r\nSubject: x\r\nMIME-Version: 1.0\r\n' +
      'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n' +
      preamble +
      '--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b1--\r\n' +
      epilogue,
    'latin1',
  );
}

const REASON = 'a file embedded outside the parts of a multipart';

describe('files embedded outside the parts of a multipart', () => {
  it('a uuencoded file in the preamble or the epilogue is malformed', () => {
    for (const msg of [multipart(uu('run.exe')), multipart('', uu('run.exe'))]) {
      const r = parseMime(msg, DEFAULT_MIME_LIMITS);
      expect(r.malformed.map((m) => m.reason)).toContain(REASON);
    }
  });

  it('plain text in the preamble is no finding', () => {
    const r = parseMime(multipart('This is a multi-part message in MIME format.\r\n'), DEFAULT_MIME_LIMITS);
    expect(r.malformed.map((m) => m.reason)).not.toContain(REASON);
  });

  it('detection with a budget of 0 finds the file without decoding it', () => {
    const budget = newDecodeBudget(0);
    const files = findEmbedded(Buffer.from(uu('run.exe'), 'latin1'), budget);
    expect(files).toHaveLength(1);
    expect(budget.used).toBe(0);
    expect(files[0]!.name).toBe('run.exe');
  });
});
