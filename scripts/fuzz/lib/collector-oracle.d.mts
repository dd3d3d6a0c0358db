// Types for collector-oracle.mjs (used by test/fuzz/collector.test.ts under tsconfig.test.json).
export interface Finding {
  inv: 'a' | 'b' | 'c' | 'd' | 'e';
  kind: string;
  detail: string;
}
export interface PassRecord {
  result: string;
  errCode: string | null;
  errMessage: string;
  errIsPosternError: boolean;
  timedOut?: boolean;
  exceptions?: string[];
}
export interface SessionRecord {
  n: number;
  uidvalidity: number;
  ids: Record<string, { key: string; id: string }>;
  dupIds?: string[];
  fetches: { ref: number; id: string | null; key: string; lied: boolean; served?: string[] }[];
}
export interface CaseRecord {
  proto: 'pop3' | 'imap';
  passes: PassRecord[];
  deliveries: { pass: number; session: number; uidvalidity: number; data: Buffer; accepted: boolean }[];
  quarantined: Buffer[];
  server: {
    contents: Record<string, Buffer>;
    tokens: Record<string, string>;
    lied: string[];
    sessions: SessionRecord[];
    removed: { pass: number; session: number; key: string; ref: number; id: string | null }[];
    decisions: { key: string; id: string | null; dup?: boolean }[];
    floods: { where: string; measured?: { grew: number } | null; cutShort?: boolean }[];
    echoed: boolean;
  };
  logs: string[];
  secrets: string[];
}
export const PASS_TIME_BOUND_MS: number;
export function splitDelivered(data: Buffer): { traceUid: string | null; output: Buffer };
export function findPayload(buf: Buffer): { payload: string; form: string } | null;
export function checkCase(rec: CaseRecord): Finding[];
