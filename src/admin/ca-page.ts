/**
 * The CA page (like mitm.it): the CA certificate in PEM and DER, its SHA-256 fingerprint, a minimal
 * unsigned .mobileconfig (Apple) with the certificate as its one payload, and short per-client
 * instructions. No login: the certificate is public.
 */
import { createHash } from 'node:crypto';
import type { CertAuthority } from '../tls/ca.js';
import { esc, html, page } from './html.js';

/** A stable UUID (v4 layout) derived from the certificate, so the profile is the same on every download. */
function uuidFrom(der: Buffer, salt: string): string {
  const h = createHash('sha256').update(salt).update(der).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`.toUpperCase();
}

export function mobileconfig(ca: CertAuthority): string {
  const b64 = ca.derBytes.toString('base64').replace(/.{1,64}/g, '\t\t\t$&\n');
  const name = esc(ca.subject);
  return `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>PayloadContent</key>
	<array>
		<dict>
			<key>PayloadCertificateFileName</key>
			<string>postern-ca.cer</string>
			<key>PayloadContent</key>
			<data>
${b64}			</data>
			<key>PayloadDisplayName</key>
			<string>${name}</string>
			<key>PayloadIdentifier</key>
			<string>postern.ca.${uuidFrom(ca.derBytes, 'cert')}</string>
			<key>PayloadType</key>
			<string>com.apple.security.root</string>
			<key>PayloadUUID</key>
			<string>${uuidFrom(ca.derBytes, 'cert')}</string>
			<key>PayloadVersion</key>
			<integer>1</integer>
		</dict>
	</array>
	<key>PayloadDisplayName</key>
	<string>postern mail proxy CA</string>
	<key>PayloadIdentifier</key>
	<string>postern.profile.${uuidFrom(ca.derBytes, 'profile')}</string>
	<key>PayloadType</key>
	<string>Configuration</string>
	<key>PayloadUUID</key>
	<string>${uuidFrom(ca.derBytes, 'profile')}</string>
	<key>PayloadVersion</key>
	<integer>1</integer>
</dict>
</plist>
`;
}

export function caPage(ca: CertAuthority): string {
  return page(
    'postern CA certificate',
    html`<p>postern decrypts and inspects your mail. Your mail program trusts it once this certificate is installed as a trusted authority.
Check that the fingerprint your device shows is exactly this one:</p>
<p>SHA-256 <code id="fingerprint">${ca.fingerprint256}</code></p>
<p>Subject <code>${ca.subject}</code>, valid until ${ca.notAfter.toISOString().slice(0, 10)}</p>
<ul>
<li><a id="pem" href="/ca.pem" download="postern-ca.pem">postern-ca.pem</a> (PEM: Thunderbird, Linux, Android)</li>
<li><a id="der" href="/ca.der" download="postern-ca.cer">postern-ca.cer</a> (DER: Windows, Outlook, macOS)</li>
<li><a id="mobileconfig" href="/ca.mobileconfig" download="postern-ca.mobileconfig">postern-ca.mobileconfig</a> (profile: iPhone, iPad, macOS)</li>
</ul>
<h2>Thunderbird</h2>
<p>Settings → Privacy &amp; Security → Certificates → Manage Certificates → Authorities → Import: choose postern-ca.pem,
tick "This certificate can identify websites", OK. Thunderbird uses its own store on every system.</p>
<h2>Outlook and Windows Mail</h2>
<p>Open postern-ca.cer → Install Certificate → Current User → "Place all certificates in the following store" →
Trusted Root Certification Authorities → Finish, and confirm the fingerprint in the warning.</p>
<h2>macOS</h2>
<p>Open postern-ca.mobileconfig, then System Settings → Privacy &amp; Security → Profiles → install it. Or open postern-ca.cer in
Keychain Access (System keychain), then Get Info → Trust → "When using this certificate: Always Trust".</p>
<h2>iPhone and iPad</h2>
<p>Open this page in Safari and download postern-ca.mobileconfig; Settings → Profile Downloaded → Install. Then
Settings → General → About → Certificate Trust Settings → turn on full trust for the postern CA.</p>
<h2>Android</h2>
<p>Settings → Security → Encryption &amp; credentials → Install a certificate → CA certificate → choose postern-ca.pem.
Mail apps that use the system store (Gmail, K-9/Thunderbird for Android) then trust postern.</p>`,
  );
}
