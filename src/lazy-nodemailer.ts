/**
 * nodemailer, loaded on first use. Only the parts that send mail need it (the collector's SMTP/LMTP
 * delivery, e-mail alarms, the admin's release by SMTP); a process that never sends does not carry
 * its ~1.5 MB of heap, which every major garbage collection walks (docs/performance.md).
 */
import { createRequire } from 'node:module';
import type * as Nodemailer from 'nodemailer';
import type SMTPConnection from 'nodemailer/lib/smtp-connection';

const requireLazily = createRequire(import.meta.url);
let mailer: typeof Nodemailer | null = null;
let connection: typeof SMTPConnection | null = null;

/** The nodemailer module (createTransport). */
export function nodemailer(): typeof Nodemailer {
  mailer ??= requireLazily('nodemailer') as typeof Nodemailer;
  return mailer;
}

/** nodemailer's SMTPConnection class (SMTP and LMTP sessions of the collector's delivery). */
export function smtpConnectionClass(): typeof SMTPConnection {
  connection ??= requireLazily('nodemailer/lib/smtp-connection') as typeof SMTPConnection;
  return connection;
}
