/**
 * Fixtures for inspector tests on the policy path without a scanner: a policy that strips (and
 * quarantines) .exe attachments, a message with one such attachment, and a quarantine that keeps
 * nothing (it only hands out ids).
 */
import type { QuarantineStore } from '../../src/policy/types.js';
import { policyFrom } from '../policy/helpers.js';

export class MemoryQuarantine implements QuarantineStore {
  n = 0;
  async put(): Promise<string> {
    return `q${++this.n}`;
  }
}

/** A message with a text part and a tool.exe attachment (STRIP_EXE_POLICY changes it). */
export const EXE =
  'From: b@example.test\r\nTo: alice@example.test\r\nSubject: tool\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="X"\r\n\r\n' +
  '--X\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n' +
  '--X\r\nContent-Type: application/octet-stream; name="tool.exe"\r\nContent-Disposition: attachment; filename="tool.exe"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
  'TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAgAAAAA==\r\n--X--\r\n';

/** Strips and quarantines *.exe attachments. */
export const STRIP_EXE_POLICY = policyFrom('filenames:\n  rules:\n    - { match: ["*.exe"], action: strip, quarantine: true }\n');
