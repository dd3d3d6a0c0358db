/**
 * A private Postfix 3.7 for integration tests: an SMTP listener on a loopback port that relays the
 * mail of its virtual domains to an LMTP server (normally Dovecot's, test/harness/dovecot.ts
 * `startDovecot({ lmtp: true })`). The implementation is shared with the benchmarks:
 * scripts/lib/postfix.mjs (types in scripts/lib/postfix.d.mts). Needs root.
 *
 * Exports:
 * - startPostfix(opts) -> Postfix:
 *   opts.lmtpPort (required): where accepted mail goes (`lmtp:inet:127.0.0.1:PORT`);
 *   opts.domains (default ['example.com']): the virtual domains;
 *   opts.recipients (default alice@, bob@ and postmaster@ each domain, or 'any'): the addresses
 *     accepted at RCPT; others get `550 5.1.1 ... User unknown in virtual mailbox table`, and an
 *     address outside the domains `550 5.1.1 ... outbound mail is off in tests`;
 *   opts.extraMainCf: lines appended to main.cf.
 * - Postfix: { dir, host, port, configDir, masterPid(), log(), queued(), waitForEmptyQueue(timeoutMs),
 *   flush(), stop() }. queued() counts messages in the queue (incoming, active, deferred, hold,
 *   maildrop); stop() runs `postfix -c DIR stop` and waits for the master to exit (SIGKILL to its
 *   process group after 10 s); log() stays readable after stop().
 * - queuedAs(reply): the queue ID in Postfix's `250 2.0.0 Ok: queued as ID` DATA reply.
 * Start-up takes about 2 s (queue directories and `postfix check` on the first start).
 */
export { type Postfix, queuedAs, type StartPostfixOptions, startPostfix } from '../../scripts/lib/postfix.mjs';
