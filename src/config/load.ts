/**
 * Loads and validates the main config file. Every problem is a ConfigError whose issues name the
 * file, line, column and key path (see ./validate.ts).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MAX_CONFIG_BYTES } from '../limits.js';
import { configSchema } from './schema.js';
import type { PosternConfig } from './types.js';
import { ConfigError, parseYamlWithSchema } from './validate.js';

/** The repository root: this module lives in src/config/ or dist/config/, two levels below it. */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The shipped default config (postern.yaml at the repository root). */
export const DEFAULT_CONFIG_FILE = path.join(REPO_ROOT, 'postern.yaml');

/** Reads, validates and normalises a config file (default: the shipped postern.yaml). Throws ConfigError. */
export function loadConfig(file?: string): PosternConfig {
  const abs = path.resolve(file ?? DEFAULT_CONFIG_FILE);
  let text: string;
  try {
    const buf = readFileSync(abs);
    if (buf.length > MAX_CONFIG_BYTES) {
      throw new ConfigError([{ file: abs, line: 1, column: 1, path: '', message: `config file larger than ${MAX_CONFIG_BYTES} bytes` }]);
    }
    text = buf.toString('utf8');
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    const reason = code === 'ENOENT' ? 'file not found' : code === 'EISDIR' ? 'is a directory' : (e as Error).message;
    throw new ConfigError([{ file: abs, line: 1, column: 1, path: '', message: `cannot read config: ${reason}` }]);
  }
  return parseConfigText(text, abs);
}

/** Validates config text as if read from `file` (relative paths resolve against its directory). */
export function parseConfigText(text: string, file: string): PosternConfig {
  const abs = path.resolve(file);
  return parseYamlWithSchema(text, abs, configSchema(abs));
}
