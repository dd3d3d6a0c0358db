/** The IMAP session lives in src/session/imap/ (index.ts); this path stays for existing imports. */
export * from './imap/index.js';
