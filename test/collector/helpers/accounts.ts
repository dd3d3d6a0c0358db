/** Account and delivery configs for collector tests (the normalised shape src/config/collector.ts produces). */
import type { CollectorAccountConfig, CollectorDeliveryConfig, UpstreamTlsMode } from '../../../src/config/types.js';
import type { Dovecot } from '../../harness/dovecot.js';

export function dovecotPort(d: Dovecot, protocol: 'pop3' | 'imap', mode: UpstreamTlsMode): number {
  if (protocol === 'pop3') return mode === 'implicit' ? d.ports.pop3s : d.ports.pop3;
  return mode === 'implicit' ? d.ports.imaps : d.ports.imap;
}

export function account(
  d: Dovecot,
  over: Partial<CollectorAccountConfig> & { protocol: 'pop3' | 'imap'; tlsMode?: UpstreamTlsMode; user?: 'alice' | 'bob' },
): CollectorAccountConfig {
  const mode = over.tlsMode ?? 'implicit';
  const user = over.user ?? 'alice';
  const { tlsMode: _t, user: _u, ...rest } = over;
  return {
    name: `${over.protocol}-${mode}`,
    enabled: true,
    host: '127.0.0.1',
    port: dovecotPort(d, over.protocol, mode),
    tls: { mode, verify: true, caFile: d.certFile, minVersion: 'TLSv1.2' },
    username: user,
    password: { kind: 'inline', value: d.users[user] },
    intervalMs: 60_000,
    timeoutMs: 10_000,
    folders: over.protocol === 'imap' ? ['INBOX'] : [''],
    mode: 'user',
    recipient: 'carol@example.com',
    acceptedDomains: [],
    envelopeHeaders: [],
    unknownRecipients: 'keep_on_server',
    maxMessagesPerPass: 100,
    maxMessageBytes: 10 * 1024 * 1024,
    keep: { kind: 'delete' },
    policy: null,
    ...rest,
  };
}

/** An account for passes against fakes or scripted servers (no real server behind `host`). */
export function fakeAccount(protocol: 'pop3' | 'imap', over: Partial<CollectorAccountConfig> = {}): CollectorAccountConfig {
  return {
    name: 'box',
    enabled: true,
    protocol,
    host: 'pop.example.net',
    port: 995,
    tls: { mode: 'implicit', verify: true, minVersion: 'TLSv1.2' },
    username: 'u',
    password: { kind: 'inline', value: 'x' },
    intervalMs: 60_000,
    timeoutMs: 1000,
    folders: protocol === 'imap' ? ['INBOX'] : [''],
    mode: 'user',
    recipient: 'carol@example.com',
    acceptedDomains: [],
    envelopeHeaders: [],
    unknownRecipients: 'keep_on_server',
    maxMessagesPerPass: 100,
    maxMessageBytes: 1024 * 1024,
    keep: { kind: 'delete' },
    policy: null,
    ...over,
  };
}

export function lmtpDelivery(port: number, over: Partial<CollectorDeliveryConfig> = {}): CollectorDeliveryConfig {
  return {
    protocol: 'lmtp',
    host: '127.0.0.1',
    port,
    starttls: 'none',
    verify: true,
    helo: 'collector.test',
    concurrency: 2,
    timeoutMs: 10_000,
    envelopeSender: '',
    ...over,
  };
}

/** A small RFC 5322 message. */
export function message(n: number, opts: { to?: string; extra?: string; body?: string; messageId?: string | null } = {}): string {
  const id = opts.messageId === undefined ? `<m${n}@test.example>` : opts.messageId;
  return [
    'Return-Path: <sender@example.net>',
    'From: Sender <sender@example.net>',
    `To: ${opts.to ?? 'carol@example.com'}`,
    `Subject: message ${n}`,
    ...(id === null ? [] : [`Message-ID: ${id}`]),
    'Date: Mon, 01 Jan 2024 00:00:00 +0000',
    ...(opts.extra ? [opts.extra] : []),
    '',
    opts.body ?? `body of message ${n}`,
    '',
  ].join('\r\n');
}
