// packaging/: the systemd unit (systemd-analyze verify where available, and its hardening keys) and
// the Dockerfile (no docker engine here: its instructions are parsed and checked), and the
// container's config passes `postern check` without a warning.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli.js';
import { mallocThresholdGiven } from '../../src/heap-tuning.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const tmp = mkdtempSync(path.join(tmpdir(), 'postern-pkg-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const read = (p: string) => readFileSync(path.join(repoRoot, p), 'utf8');

const hasAnalyze = spawnSync('systemd-analyze', ['--version']).status === 0;

/** systemd-analyze verify on a unit text: its complaints about that unit (other units' noise filtered out). */
function verify(name: string, text: string): string[] {
  const file = path.join(tmp, name);
  writeFileSync(file, text);
  const r = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8' });
  return `${r.stdout}${r.stderr}`.split('\n').filter((l) => l.includes(name));
}

/** `Key=value` pairs of a unit file, per section (repeated keys kept in order). */
function unitKeys(text: string): Map<string, string[]> {
  const m = new Map<string, string[]>();
  let section = '';
  for (const raw of text.split('\n')) {
    const l = raw.trim();
    if (!l || l.startsWith('#')) continue;
    const s = /^\[(\w+)\]$/.exec(l);
    if (s) {
      section = s[1]!;
      continue;
    }
    const kv = /^([A-Za-z]+)=(.*)$/.exec(l);
    if (!kv) throw new Error(`not a unit line: ${l}`);
    const k = `${section}.${kv[1]}`;
    m.set(k, [...(m.get(k) ?? []), kv[2]!]);
  }
  return m;
}

describe('packaging/postern.service', () => {
  const unit = read('packaging/postern.service');

  it.runIf(hasAnalyze)('systemd-analyze verify finds nothing to say about it (and does complain about a misspelt key)', () => {
    expect(verify('postern.service', unit)).toEqual([]);
    const bad = verify('postern-bad.service', unit.replace('ProtectSystem=strict', 'ProtectSystm=strict'));
    expect(bad.join('\n')).toMatch(/Unknown key.*ProtectSystm/i);
  });

  it('is hardened: dedicated user, only CAP_NET_BIND_SERVICE, read-only system, writable state dir, no new privileges', () => {
    const k = unitKeys(unit);
    const one = (key: string) => {
      const v = k.get(key);
      expect(v, key).toHaveLength(1);
      return v![0]!;
    };
    expect(one('Service.User')).toBe('postern');
    expect(one('Service.User')).not.toMatch(/^(root|0)$/);
    expect(k.has('Service.DynamicUser')).toBe(false);
    expect(one('Service.AmbientCapabilities')).toBe('CAP_NET_BIND_SERVICE');
    expect(one('Service.CapabilityBoundingSet')).toBe('CAP_NET_BIND_SERVICE');
    expect(one('Service.NoNewPrivileges')).toBe('yes');
    expect(one('Service.ProtectSystem')).toBe('strict');
    expect(one('Service.ReadWritePaths').split(/\s+/)).toContain('/var/lib/postern');
    expect(one('Service.StateDirectory')).toBe('postern');
    expect(one('Service.ProtectHome')).toBe('yes');
    expect(one('Service.PrivateTmp')).toBe('yes');
    expect(one('Service.ExecStart')).toMatch(/postern\.js serve --config \/etc\/postern\/postern\.yaml$/);
    // glibc malloc's thresholds (docs/performance.md, "Fresh large buffers"): postern keeps them
    const env = Object.fromEntries(
      one('Service.Environment')
        .split(/\s+/)
        .map((kv) => kv.split('=') as [string, string]),
    );
    expect(env).toEqual({ MALLOC_MMAP_THRESHOLD_: String(32 * 1024 * 1024), MALLOC_TRIM_THRESHOLD_: String(256 * 1024 * 1024) });
    expect(mallocThresholdGiven(env)).toBe(true);
    expect(one('Service.KillSignal')).toBe('SIGTERM');
    // V8's JIT: MemoryDenyWriteExecute=yes would crash node
    expect(k.get('Service.MemoryDenyWriteExecute') ?? []).not.toContain('yes');
    // the sysusers file creates that user
    expect(read('packaging/postern.sysusers.conf')).toMatch(/^u postern - .* \/var\/lib\/postern \/usr\/sbin\/nologin$/m);
  });
});

describe('packaging/Dockerfile', () => {
  const text = read('packaging/Dockerfile');
  // instructions with their continuation lines joined
  const instructions = text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const m = /^([A-Z]+)\s+(.*)$/.exec(l);
      if (!m) throw new Error(`not an instruction: ${l}`);
      return { op: m[1]!, args: m[2]! };
    });
  const stages: { op: string; args: string }[][] = [];
  for (const i of instructions) {
    if (i.op === 'FROM') stages.push([]);
    stages.at(-1)?.push(i);
  }
  const final = stages.at(-1)!;

  it('only known instructions; multi-stage; the final stage runs as a non-root user with a HEALTHCHECK and no build tools', () => {
    const known = new Set(['FROM', 'RUN', 'COPY', 'ENV', 'WORKDIR', 'USER', 'EXPOSE', 'VOLUME', 'HEALTHCHECK', 'ENTRYPOINT', 'CMD', 'ARG', 'LABEL']);
    expect(instructions.filter((i) => !known.has(i.op))).toEqual([]);
    expect(stages.length).toBeGreaterThanOrEqual(2);
    expect(stages[0]![0]!.args).toMatch(/ AS build$/);
    const users = final.filter((i) => i.op === 'USER');
    expect(users).toHaveLength(1);
    expect(users[0]!.args).not.toMatch(/^(root|0)(:|$)/);
    // nothing runs after USER as root again, and the entry point comes after it
    expect(final.findIndex((i) => i.op === 'USER')).toBeLessThan(final.findIndex((i) => i.op === 'ENTRYPOINT'));
    const hc = final.filter((i) => i.op === 'HEALTHCHECK');
    expect(hc).toHaveLength(1);
    expect(hc[0]!.args).toMatch(/CMD .*\/healthz/);
    const finalRuns = final
      .filter((i) => i.op === 'RUN')
      .map((i) => i.args)
      .join('\n');
    expect(finalRuns).not.toMatch(/apt-get install|g\+\+|\bmake\b|python3|npm (ci|install)/);
    expect(final.some((i) => i.op === 'COPY' && i.args.startsWith('--from=build '))).toBe(true);
    // the build stage does compile and prune the dev dependencies
    expect(stages[0]!.map((i) => i.args).join('\n')).toMatch(/tsc -p tsconfig\.json && npm prune --omit=dev/);
  });

  it('every file it copies from the context exists and is not excluded by its .dockerignore', () => {
    const ignore = read('packaging/Dockerfile.dockerignore')
      .split('\n')
      .filter((l) => l && !l.startsWith('#'));
    expect(ignore[0]).toBe('**');
    const allowed = ignore.slice(1).map((l) => l.replace(/^!/, '').replace(/\/\*\*$/, ''));
    const sources = instructions.filter((i) => i.op === 'COPY' && !i.args.startsWith('--from')).flatMap((i) => i.args.split(/\s+/).slice(0, -1));
    expect(sources.length).toBeGreaterThan(5);
    for (const s of sources) {
      expect(existsSync(path.join(repoRoot, s)), s).toBe(true);
      expect(
        allowed.some((a) => s === a || s.startsWith(`${a}/`)),
        `${s} is excluded by the .dockerignore`,
      ).toBe(true);
    }
  });

  it("the container's config passes postern check with nothing on stderr (paths moved into a temp dir)", async () => {
    const cfg = read('packaging/docker/postern.yaml')
      .replaceAll('/opt/postern/policies', path.join(repoRoot, 'policies'))
      .replaceAll('/var/lib/postern', path.join(tmp, 'state'));
    const file = path.join(tmp, 'docker-postern.yaml');
    writeFileSync(file, cfg);
    let out = '';
    let err = '';
    const code = await main(['check', '--config', file], { stdout: (d) => void (out += String(d)), stderr: (d) => void (err += d) });
    expect({ code, err }).toEqual({ code: 0, err: '' });
    expect(out).toMatch(/config OK: .* \(4 listener\(s\), 1 policy\)\n$/);
    // the image's HEALTHCHECK port is the config's admin port
    const port = /127\.0\.0\.1:(\d+)\/healthz/.exec(read('packaging/Dockerfile'))?.[1];
    expect(port).toBeDefined();
    expect(cfg).toContain(`admin:\n  listen: { host: 127.0.0.1, port: ${port} }`);
  });
});
