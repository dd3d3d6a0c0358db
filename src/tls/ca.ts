/**
 * postern's own certificate authority: signs the leaf certificates mail clients see.
 *
 * Key choice: RSA 2048. The CA key is generated once (0.2-1.2 s) and every client that trusts the
 * CA must be able to verify its signatures; RSA/SHA-256 is understood by every TLS stack still in
 * use, including old Outlook and embedded clients, whereas ECDSA-signed chains are not.
 */

import { createPrivateKey, generateKeyPairSync, type KeyObject, X509Certificate } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  existsSync,
  constants as fsConstants,
  fstatSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  type Stats,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import lockfile from 'proper-lockfile';
import { constraintsFromEntries, describeNameConstraints, type NameConstraints, sameConstraints } from '../config/name-constraints.js';
import type { CaConfig } from '../config/types.js';
import { ErrorCodes, PosternError } from '../errors.js';
import { CA_LOCK_LIMITS } from '../limits.js';
import { logErr } from '../log/logger.js';
import { buildCertificate, type IssuerInfo, issuerInfoFromCert, nameConstraintsExtension, readNameConstraints } from './x509.js';

export const CA_CERT_FILE = 'ca.crt';
export const CA_KEY_FILE = 'ca.key';
export const CA_VALIDITY_YEARS = 10;
/** Mode of a CA directory postern creates: ca.crt must be readable by the users who import it. */
export const CA_DIR_MODE = 0o755;
/**
 * The cross-process lock (proper-lockfile: a directory, created atomically) held while a CA is checked
 * for, generated and written: two processes starting on an empty ca.dir create one CA, not two.
 */
export const CA_LOCK_FILE = 'ca.lock';

export class CertAuthority {
  readonly certPem: string;
  readonly keyPem: string;
  readonly key: KeyObject;
  readonly derBytes: Buffer;
  readonly x509: X509Certificate;
  /** `AB:CD:...` (as openssl prints it). */
  readonly fingerprint256: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** e.g. `CN=postern local interception CA, O=postern`. */
  readonly subject: string;
  readonly certFile: string;
  readonly keyFile: string;
  /** Problems that do not stop the CA from working (loose key file permissions, expiry soon). */
  readonly warnings: string[];
  /** Issuer data for minting leaves. */
  readonly issuer: IssuerInfo;
  /** The CA certificate's nameConstraints (null = none): the leaf minter never signs a name outside them. */
  readonly nameConstraints: NameConstraints | null;

  constructor(certPem: string, keyPem: string, files: { certFile: string; keyFile: string }, warnings: string[] = []) {
    this.certPem = certPem;
    this.keyPem = keyPem;
    this.certFile = files.certFile;
    this.keyFile = files.keyFile;
    this.warnings = warnings;
    let x509: X509Certificate;
    try {
      x509 = new X509Certificate(certPem);
    } catch (e) {
      throw caError(`${files.certFile}: not a PEM certificate (${(e as Error).message})`);
    }
    let key: KeyObject;
    try {
      key = createPrivateKey(keyPem);
    } catch (e) {
      throw caError(`${files.keyFile}: not a PEM private key (${(e as Error).message})`);
    }
    if (!x509.ca) throw caError(`${files.certFile}: certificate is not a CA (basicConstraints CA:TRUE missing)`);
    if (!x509.checkPrivateKey(key)) throw caError(`${files.keyFile} does not belong to ${files.certFile}`);
    if (key.asymmetricKeyType !== 'rsa' && key.asymmetricKeyType !== 'ec') {
      throw caError(`${files.keyFile}: unsupported key type ${String(key.asymmetricKeyType)} (RSA or EC needed)`);
    }
    this.x509 = x509;
    this.key = key;
    this.derBytes = x509.raw;
    this.fingerprint256 = x509.fingerprint256;
    this.notBefore = new Date(x509.validFrom);
    this.notAfter = new Date(x509.validTo);
    this.subject = x509.subject.split('\n').join(', ');
    this.issuer = issuerInfoFromCert(x509.raw, key);
    try {
      this.nameConstraints = readNameConstraints(x509.raw);
    } catch (e) {
      throw caError(`${files.certFile}: malformed nameConstraints extension (${(e as Error).message})`);
    }
    const now = Date.now();
    if (this.notAfter.getTime() <= now) {
      this.warnings.push(
        `CA certificate expired on ${this.notAfter.toISOString()}: clients will reject every minted certificate; run \`postern ca init --force\``,
      );
    } else if (this.notAfter.getTime() - now < 30 * 86_400_000) {
      this.warnings.push(`CA certificate expires on ${this.notAfter.toISOString()}`);
    }
  }

  get expired(): boolean {
    return this.notAfter.getTime() <= Date.now();
  }

  /** `none`, or e.g. `permitted DNS:example.com; excluded IP:0.0.0.0/0, IP:::/0` (for `postern ca show`). */
  get nameConstraintsText(): string {
    return describeNameConstraints(this.nameConstraints);
  }
}

function caError(message: string, details: Record<string, unknown> = {}): PosternError {
  return new PosternError(ErrorCodes.CA, message, details);
}

export function caPaths(cfg: CaConfig): { certFile: string; keyFile: string } {
  return { certFile: path.join(cfg.dir, CA_CERT_FILE), keyFile: path.join(cfg.dir, CA_KEY_FILE) };
}

/**
 * Writes `data` to `file` atomically with `mode`: a temp file opened with the mode (so the key is
 * never readable by others, whatever the umask), chmod'ed (umask may have removed bits from the
 * requested mode, never added: chmod makes it exact), fsynced, then renamed over the target.
 */
function writeFileAtomic(file: string, data: string, mode: number): void {
  const tmp = `${file}.tmp-${process.pid}-${Date.now()}`;
  const fd = openSync(tmp, 'wx', mode);
  try {
    writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    chmodSync(tmp, mode);
    renameSync(tmp, file);
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {
      /* already gone */
    }
    throw e;
  }
}

/** Creates cfg.dir (0755, see initCa) when missing; an existing directory is the operator's and is left alone. */
function ensureCaDir(cfg: CaConfig): void {
  const createdDir = !existsSync(cfg.dir);
  mkdirSync(cfg.dir, { recursive: true, mode: CA_DIR_MODE });
  if (createdDir) chmodSync(cfg.dir, CA_DIR_MODE);
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * Runs `fn` holding the CA lock (CA_LOCK_FILE in cfg.dir, created first), waiting for another
 * process's lock up to CA_LOCK_LIMITS.waitMs. Synchronous (serve opens the CA before anything runs): the
 * lock is released before the event loop could refresh it, so `fn` must stay well under the stale time.
 */
function withCaLock<T>(cfg: CaConfig, fn: () => T): T {
  ensureCaDir(cfg);
  const lockPath = path.join(cfg.dir, CA_LOCK_FILE);
  const deadline = Date.now() + CA_LOCK_LIMITS.waitMs;
  let release: () => void;
  for (;;) {
    try {
      release = lockfile.lockSync(cfg.dir, { lockfilePath: lockPath, stale: CA_LOCK_LIMITS.staleMs, realpath: false });
      break;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ELOCKED') throw caError(`cannot lock ${lockPath} to create the CA: ${(e as Error).message}`, { file: lockPath });
      if (Date.now() >= deadline) {
        throw caError(
          `another process holds ${lockPath} (creating the CA) for more than ${CA_LOCK_LIMITS.waitMs / 1000} s; if no postern is running, remove it (rmdir ${lockPath})`,
          { file: lockPath },
        );
      }
      sleepSync(50 + Math.floor(Math.random() * 50));
    }
  }
  try {
    return fn();
  } finally {
    try {
      release();
    } catch {
      /* already released or taken over: the CA files are written either way */
    }
  }
}

/** Creates a new CA in cfg.dir. Refuses to replace an existing ca.crt / ca.key unless `force`. */
export function initCa(cfg: CaConfig, opts: { force?: boolean } = {}): CertAuthority {
  return withCaLock(cfg, () => createCa(cfg, opts));
}

/** initCa's work, under the lock. */
function createCa(cfg: CaConfig, opts: { force?: boolean }): CertAuthority {
  const files = caPaths(cfg);
  if (!opts.force) {
    const existing = [files.certFile, files.keyFile].filter((f) => existsSync(f));
    if (existing.length > 0) {
      throw caError(`a CA already exists (${existing.join(', ')}); replacing it breaks every client that trusts it: use --force to do it anyway`, {
        existing,
      });
    }
  }
  // the directory (withCaLock, ensureCaDir) is 0755: ca.crt (0644) is the file users import, so the
  // directory must be searchable by them; only ca.key is private (0600). A directory created there
  // is chmod'ed (the umask may have removed bits); an existing one is the operator's and is left alone.

  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const now = Date.now();
  // an hour back: tolerates clients whose clock runs a little behind
  const notBefore = new Date(now - 3_600_000);
  const notAfter = new Date(notBefore);
  notAfter.setUTCFullYear(notAfter.getUTCFullYear() + CA_VALIDITY_YEARS);
  const host =
    hostname()
      .replace(/[^\x20-\x7e]/g, '')
      .slice(0, 64) || 'unknown host';
  const built = buildCertificate({
    subject: [
      { name: 'commonName', value: cfg.commonName },
      { name: 'organizationName', value: cfg.organization },
      // tells apart the CAs of several postern installs in one trust store
      { name: 'organizationalUnitName', value: host },
    ],
    notBefore,
    notAfter,
    publicKey,
    selfKey: privateKey,
    extensions: [
      // pathlen 0: this CA signs leaves only, never another CA
      { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
      // RFC 5280 says nameConstraints MUST be critical; clients that do not understand it then refuse the CA instead of ignoring it
      ...(cfg.nameConstraints?.length ? [nameConstraintsExtension(constraintsFromEntries(cfg.nameConstraints))] : []),
    ],
  });
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  // key first: a crash in between leaves a key without a cert, which loadOrCreateCa reports rather than replaces
  writeFileAtomic(files.keyFile, keyPem, 0o600);
  writeFileAtomic(files.certFile, built.pem, 0o644);
  return new CertAuthority(built.pem, keyPem, files);
}

/**
 * Why the CA key file `keyFile` (its fstat) must not be used, or null: any permission for group or
 * others (it signs certificates every client trusts), not a regular file, or owned by another user
 * than the process (`euid`; undefined where there are no uids) unless the process runs as root.
 */
export function caKeyFileProblem(keyFile: string, st: Pick<Stats, 'mode' | 'uid' | 'isFile'>, euid: number | undefined): string | null {
  if (!st.isFile()) return `${keyFile} is not a regular file`;
  const mode = st.mode & 0o777;
  if (mode & 0o077) {
    return `${keyFile} has mode ${mode.toString(8).padStart(4, '0')}: the CA key must not be readable or writable by group or others; run \`chmod 600 ${keyFile}\``;
  }
  if (euid !== undefined && euid !== 0 && st.uid !== euid) {
    return `${keyFile} is owned by uid ${st.uid}, not by the user postern runs as (uid ${euid}); run \`chown ${euid} ${keyFile}\` (as root)`;
  }
  return null;
}

/** Loads the CA from cfg.dir; PosternError E_CA when missing or unusable, or when ca.key is open to group/others or another user's. */
export function loadCa(cfg: CaConfig): CertAuthority {
  const files = caPaths(cfg);
  const read = (f: string, what: string, check?: (fd: number) => void): string => {
    let fd: number;
    try {
      // O_NONBLOCK: a FIFO planted as ca.key fails the regular-file check instead of blocking the open
      fd = openSync(f, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw caError(code === 'ENOENT' ? `no CA ${what} at ${f}: run \`postern ca init\`` : `cannot read CA ${what} ${f}: ${(e as Error).message}`, {
        file: f,
      });
    }
    try {
      check?.(fd);
      return readFileSync(fd, 'utf8');
    } catch (e) {
      if (e instanceof PosternError) throw e;
      throw caError(`cannot read CA ${what} ${f}: ${(e as Error).message}`, { file: f });
    } finally {
      closeSync(fd);
    }
  };
  const certPem = read(files.certFile, 'certificate');
  // checked on the descriptor that is read: no window between the check and the read
  const keyPem = read(files.keyFile, 'key', (fd) => {
    const problem = caKeyFileProblem(files.keyFile, fstatSync(fd), process.geteuid?.());
    if (problem) throw caError(problem, { file: files.keyFile });
  });
  const warnings: string[] = [];
  const ca = new CertAuthority(certPem, keyPem, files, warnings);
  const wanted = cfg.nameConstraints?.length ? constraintsFromEntries(cfg.nameConstraints) : null;
  if (!sameConstraints(wanted, ca.nameConstraints)) {
    ca.warnings.push(
      `ca.name_constraints in the config (${describeNameConstraints(wanted)}) differ from the CA's (${ca.nameConstraintsText}): they are written only when the CA is generated; run \`postern ca init --force\` (clients must then import the new CA)`,
    );
  }
  return ca;
}

/**
 * loadOrCreateCa with its log lines (`ca.ready`, each `ca.warning`; `ca.failed` at fatal before the
 * error is rethrown): what serve and the cluster primary both do at start.
 */
export function openCa(cfg: CaConfig, log: Logger): CertAuthority {
  try {
    const { ca, created } = loadOrCreateCa(cfg);
    log.info(
      {
        event: 'ca.ready',
        ca: {
          cert: ca.certFile,
          key: ca.keyFile,
          created,
          subject: ca.subject,
          fingerprint256: ca.fingerprint256,
          notAfter: ca.notAfter.toISOString(),
        },
      },
      created ? `created a new CA: import ${ca.certFile} into your mail clients (postern ca export)` : `using CA ${ca.certFile}`,
    );
    for (const w of ca.warnings) log.warn({ event: 'ca.warning', ca: ca.certFile }, w);
    return ca;
  } catch (e) {
    log.fatal({ event: 'ca.failed', err: logErr(e, ErrorCodes.CA) }, 'cannot load or create the CA');
    throw e;
  }
}

/**
 * Loads the CA, creating it when neither file exists. A half-present CA (one file missing) is an
 * error, never overwritten. Creation happens under the CA lock (withCaLock) and the files are looked
 * for again once it is held: of several processes starting at once on an empty ca.dir, one creates
 * the CA and the others load that one.
 */
export function loadOrCreateCa(cfg: CaConfig): { ca: CertAuthority; created: boolean } {
  const files = caPaths(cfg);
  // both present: nothing to create, no lock needed (a read-only ca.dir works)
  if (existsSync(files.certFile) && existsSync(files.keyFile)) return { ca: loadCa(cfg), created: false };
  return withCaLock(cfg, () => {
    const haveCert = existsSync(files.certFile);
    const haveKey = existsSync(files.keyFile);
    if (!haveCert && !haveKey) return { ca: createCa(cfg, {}), created: true };
    if (haveCert !== haveKey) {
      throw caError(
        `incomplete CA in ${cfg.dir}: ${haveCert ? files.keyFile : files.certFile} is missing; restore it or run \`postern ca init --force\` to create a new CA`,
      );
    }
    return { ca: loadCa(cfg), created: false };
  });
}
