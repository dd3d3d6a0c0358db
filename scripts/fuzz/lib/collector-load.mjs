// Loads the collector's code under test for scripts/fuzz/collector.mjs from a directory of compiled
// modules: dist/ (default), or a private transpiled copy of src/ (session-load.mjs transpileSources).
import { existsSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

export async function loadCollectorDeps(distDir) {
  const imp = (p) => import(pathToFileURL(path.join(distDir, p)).href);
  if (!existsSync(path.join(distDir, 'collector/pass.js'))) throw new Error(`no compiled postern in ${distDir} (run npx tsc -p . or use --src)`);
  const [pass, state, pop3, imap, recipients, engine, load, memory, logger, errors] = await Promise.all([
    imp('collector/pass.js'),
    imp('collector/state.js'),
    imp('collector/pop3.js'),
    imp('collector/imap.js'),
    imp('collector/recipients.js'),
    imp('policy/engine.js'),
    imp('policy/load.js'),
    imp('relay/memory.js'),
    imp('log/logger.js'),
    imp('errors.js'),
  ]);
  return {
    runPass: pass.runPass,
    CollectorState: state.CollectorState,
    Pop3Mailbox: pop3.Pop3Mailbox,
    ImapMailbox: imap.ImapMailbox,
    resolveRecipients: recipients.resolveRecipients,
    inspectMessage: engine.inspectMessage,
    loadPolicy: load.loadPolicy,
    HoldGate: memory.HoldGate,
    logErr: logger.logErr,
    PosternError: errors.PosternError,
  };
}
