/**
 * What a config + its policies leave unprotected, computed in one place so that `postern serve`
 * (which logs each item at start) and `postern check` (which prints them) say the same thing.
 *
 * - A policy that enables antivirus while the config has no `scanner:` section: its messages are not
 *   virus-scanned. A warning, unless the config says `scanner: none` (antivirus switched off on
 *   purpose): then a note (info), so the operator's explicit choice does not greet every start with
 *   a WARN, and is still stated.
 * - A policy that enables spam scoring while the config has no `spam:` section: a warning.
 */
import type { PosternConfig } from './types.js';

export interface ConfigWarning {
  /** `warn` for something the operator probably did not mean; `info` for a stated choice. */
  level: 'warn' | 'info';
  /** The log event (src/log/logger.ts LOG_EVENTS). */
  event: 'policy.unscanned';
  fields: { policy: string; scanner: 'antivirus' | 'spam' };
  message: string;
}

/** The parts of a loaded policy these checks read (CompiledPolicy has them). */
export interface PolicyScanNeeds {
  antivirus: { enabled: boolean };
  spam: { enabled: boolean };
}

/**
 * `policies`: the policies in use, by name. `have`: whether the antivirus / spam scanner is there
 * (serve: the scanners it built; check: whether the config names them).
 */
export function policyWarnings(
  config: Pick<PosternConfig, 'scannerOff'>,
  policies: Iterable<[string, PolicyScanNeeds]>,
  have: { scanner: boolean; spamScanner: boolean },
): ConfigWarning[] {
  const out: ConfigWarning[] = [];
  for (const [name, p] of policies) {
    if (p.antivirus.enabled && !have.scanner) {
      out.push(
        config.scannerOff
          ? {
              level: 'info',
              event: 'policy.unscanned',
              fields: { policy: name, scanner: 'antivirus' },
              message: `antivirus is switched off in the config (scanner: none): policy ${name} asks for it, messages are not virus-scanned`,
            }
          : {
              level: 'warn',
              event: 'policy.unscanned',
              fields: { policy: name, scanner: 'antivirus' },
              message: `policy ${name} enables antivirus but no scanner is configured: messages are not virus-scanned (configure scanner:, or say scanner: none)`,
            },
      );
    }
    if (p.spam.enabled && !have.spamScanner) {
      out.push({
        level: 'warn',
        event: 'policy.unscanned',
        fields: { policy: name, scanner: 'spam' },
        message: `policy ${name} enables spam scoring but no spam scanner is configured: messages are not spam-checked`,
      });
    }
  }
  return out;
}
