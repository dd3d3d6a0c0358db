// A process that opens the CA of ca.dir argv[2] with loadOrCreateCa once the parent says "go"
// (test/tls/ca-lock-perms.test.ts: several processes starting at once on an empty ca.dir).
// node --import ./test/collector/helpers/ts-register.mjs test/tls/helpers/ca-race-child.ts DIR
import { loadOrCreateCa } from '../../../src/tls/ca.js';

const dir = process.argv[2]!;
process.on('message', () => {
  try {
    const { ca, created } = loadOrCreateCa({ dir, commonName: 'postern race CA', organization: 'postern' });
    process.send!({ created, fingerprint: ca.fingerprint256 }, () => process.exit(0));
  } catch (e) {
    process.send!({ error: (e as Error).message }, () => process.exit(0));
  }
});
process.send!('ready');
