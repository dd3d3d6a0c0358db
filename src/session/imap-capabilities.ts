/**
 * Which upstream IMAP capabilities postern hides from clients, and why. Applied everywhere a
 * capability list appears: untagged CAPABILITY, `[CAPABILITY ...]` in greetings and tagged OKs.
 */
export const HIDDEN_CAPABILITIES: ReadonlyArray<{ match: (cap: string) => boolean; reason: string }> = [
  { match: (c) => c.startsWith('COMPRESS='), reason: 'a DEFLATE stream would blind inspection; answering NO to COMPRESS makes Thunderbird show errors, so it is hidden' },
  { match: (c) => c === 'STARTTLS', reason: 'postern terminates TLS on each side itself and offers STARTTLS per listener mode' },
  { match: (c) => c === 'LOGINDISABLED', reason: 'postern decides per listener whether plaintext login is allowed' },
  { match: (c) => c.startsWith('AUTH='), reason: 'postern authenticates the client itself (PLAIN, LOGIN) and logs in upstream on its behalf' },
  { match: (c) => c === 'SASL-IR', reason: 'only meaningful before login, where postern answers itself' },
  { match: (c) => c.startsWith('URLAUTH'), reason: 'URLFETCH returns message content outside FETCH, bypassing inspection' },
  { match: (c) => c === 'NOTIFY', reason: 'NOTIFY can push FETCH data outside any client command, bypassing inspection' },
  { match: (c) => c === 'PREVIEW' || c.startsWith('SNIPPET='), reason: 'previews return body text outside FETCH body items, bypassing inspection' },
  { match: (c) => c === 'CATENATE', reason: 'CATENATE builds messages from server-side URLs; not relayed in this version' },
];

export function filterCapabilities(caps: string[]): string[] {
  return caps.filter((c) => {
    const u = c.toUpperCase();
    return !HIDDEN_CAPABILITIES.some((h) => h.match(u));
  });
}

/** Capabilities postern advertises before login (it handles that phase itself). */
export function preauthCapabilities(opts: { offerStartTls: boolean; loginDisabled: boolean }): string[] {
  const caps = ['IMAP4rev1', 'LITERAL+', 'ID'];
  if (opts.offerStartTls) caps.push('STARTTLS');
  if (opts.loginDisabled) caps.push('LOGINDISABLED');
  else caps.push('SASL-IR', 'AUTH=PLAIN', 'AUTH=LOGIN');
  return caps;
}
