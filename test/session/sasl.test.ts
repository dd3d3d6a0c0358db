/** The one SASL decoder both sessions use (src/session/sasl.ts). */
import { describe, expect, it } from 'vitest';
import { decodeSaslBase64, parseSaslPlain } from '../../src/session/sasl.js';

describe('decodeSaslBase64', () => {
  it('accepts canonical padded base64 and "=" for empty', () => {
    expect(decodeSaslBase64('AGFsaWNlAHB3')!.toString('latin1')).toBe('\0alice\0pw');
    expect(decodeSaslBase64('=')!.length).toBe(0);
  });
  it.each(['AGFsaWNlAHB', 'AGFsaWNlAHB3=', 'AGFsa WNlAHB3', 'AGFsaWNlAHB3\r', 'AGF-aWNl', '', '====', 'QQ=x'])(
    'refuses %j (not what a strict server reads)',
    (t) => {
      expect(decodeSaslBase64(t)).toBeNull();
    },
  );
});

describe('parseSaslPlain', () => {
  const b = (s: string) => Buffer.from(s, 'latin1');
  it('reads authcid and password; an equal authzid is fine', () => {
    expect(parseSaslPlain(b('\0alice\0pw'))).toEqual({ ok: true, authcid: b('alice'), password: b('pw') });
    expect(parseSaslPlain(b('alice\0alice\0pw'))).toMatchObject({ ok: true });
  });
  it('refuses another authorization identity, missing fields and an empty user', () => {
    expect(parseSaslPlain(b('bob\0alice\0pw'))).toEqual({ ok: false, reason: 'authzid' });
    expect(parseSaslPlain(b('\0alice'))).toEqual({ ok: false, reason: 'malformed' });
    expect(parseSaslPlain(b('\0\0pw'))).toEqual({ ok: false, reason: 'malformed' });
    expect(parseSaslPlain(b('\0a\0b\0c'))).toEqual({ ok: false, reason: 'malformed' });
  });
});
