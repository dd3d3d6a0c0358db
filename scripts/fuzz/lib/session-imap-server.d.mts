// Types for session-imap-server.mjs (used by test/fuzz/session-dovecot.test.ts under tsconfig.test.json).
export class ImapUpstream {
  constructor(opts?: Record<string, unknown>);
  out: Buffer[];
  closed: boolean;
  connect(): void;
  receive(data: Buffer): void;
  arm(action: Record<string, unknown>): void;
}
export const UPSTREAM_CAPS: string;
