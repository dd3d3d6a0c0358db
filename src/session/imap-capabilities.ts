/**
 * Which upstream IMAP capabilities postern hides from clients, and why. Applied everywhere a
 * capability list appears: untagged CAPABILITY, `[CAPABILITY ...]` in greetings and tagged OKs.
 */
export const HIDDEN_CAPABILITIES: ReadonlyArray<{ match: (cap: string) => boolean; reason: string }> = [
  {
    match: (c) => c.startsWith('COMPRESS='),
    reason: 'a DEFLATE stream would blind inspection; answering NO to COMPRESS makes Thunderbird show errors, so it is hidden',
  },
  { match: (c) => c === 'STARTTLS', reason: 'postern terminates TLS on each side itself and offers STARTTLS per listener mode' },
  { match: (c) => c === 'LOGINDISABLED', reason: 'postern decides per listener whether plaintext login is allowed' },
  {
    match: (c) => c.startsWith('AUTH='),
    reason: 'postern authenticates the client itself (PLAIN, LOGIN, XOAUTH2, OAUTHBEARER) and logs in upstream on its behalf',
  },
  { match: (c) => c === 'SASL-IR', reason: 'only meaningful before login, where postern answers itself' },
  { match: (c) => c.startsWith('URLAUTH') || c === 'URL-PARTIAL', reason: 'URLFETCH returns message content outside FETCH, bypassing inspection' },
  { match: (c) => c === 'NOTIFY', reason: 'NOTIFY can push FETCH data outside any client command, bypassing inspection' },
  { match: (c) => c.startsWith('PREVIEW') || c.startsWith('SNIPPET='), reason: 'previews return body text outside FETCH body items, bypassing inspection' },
  { match: (c) => c === 'CATENATE', reason: 'CATENATE builds messages from server-side URLs; not relayed in this version' },
];

/**
 * Capabilities relayed to clients: an allowlist (fail closed). Postern relays only extensions whose
 * commands its grammar (protocol/imap/command.ts) parses and whose responses its choke point
 * (protocol/imap/response-screen.ts) understands; everything else — the HIDDEN_CAPABILITIES above,
 * CONTEXT=SEARCH/SORT, LIST-MYRIGHTS, SEARCH=FUZZY, X-GM-EXT-1, IMAP4rev2, UTF8=ACCEPT and any
 * extension a server adds tomorrow — is not shown, so clients never try syntax postern refuses.
 */
const RELAYED_CAPABILITIES = new Set([
  'IMAP4REV1',
  'LITERAL+',
  'LITERAL-',
  'ID',
  'ENABLE',
  'IDLE',
  'NAMESPACE',
  'UIDPLUS',
  'MOVE',
  'UNSELECT',
  'CHILDREN',
  'LIST-EXTENDED',
  'LIST-STATUS',
  'SPECIAL-USE',
  'CREATE-SPECIAL-USE',
  'ESEARCH',
  'ESORT',
  'SEARCHRES',
  'SORT',
  'SORT=DISPLAY',
  'CONDSTORE',
  'QRESYNC',
  'I18NLEVEL=1',
  'MULTIAPPEND',
  'BINARY',
  'QUOTA',
  'ACL',
  'WITHIN',
  'SAVEDATE',
  'OBJECTID',
  'STATUS=SIZE',
  'LOGIN-REFERRALS',
  'MAILBOX-REFERRALS',
]);
const RELAYED_PREFIXES = ['THREAD=', 'QUOTA=', 'RIGHTS=', 'APPENDLIMIT='];

export function isRelayedCapability(cap: string): boolean {
  const u = cap.toUpperCase();
  if (HIDDEN_CAPABILITIES.some((h) => h.match(u))) return false;
  return RELAYED_CAPABILITIES.has(u) || RELAYED_PREFIXES.some((p) => u.startsWith(p) && /^[A-Z0-9=+.-]+$/.test(u));
}

export function filterCapabilities(caps: string[]): string[] {
  return caps.filter(isRelayedCapability);
}

/** Extensions a client may ENABLE through postern (RFC 5161); anything else is refused. */
export const ENABLE_ALLOWED: ReadonlySet<string> = new Set(['CONDSTORE', 'QRESYNC']);

/**
 * Capabilities postern advertises before login (it handles that phase itself). `oauth`: the OAuth2
 * mechanisms it relays now (src/session/oauth.ts: listenerOAuth, only over TLS or on a `none`
 * listener), advertised after PLAIN and LOGIN and only where LOGIN is allowed.
 */
export function preauthCapabilities(opts: { offerStartTls: boolean; loginDisabled: boolean; oauth?: readonly string[] }): string[] {
  const caps = ['IMAP4rev1', 'LITERAL+', 'ID'];
  if (opts.offerStartTls) caps.push('STARTTLS');
  if (opts.loginDisabled) caps.push('LOGINDISABLED');
  else caps.push('SASL-IR', 'AUTH=PLAIN', 'AUTH=LOGIN', ...(opts.oauth ?? []).map((m) => `AUTH=${m}`));
  return caps;
}
