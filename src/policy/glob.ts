/**
 * Glob patterns of a policy: file-name rules (`filenames.rules[].match`), header names
 * (`headers.strip[].name`) and content types (`content_types.rules[].match`).
 *
 * Name globs follow picomatch's reading with the options
 *   { nocase: true, dot: true, basename: true, noextglob: true, nonegate: true, literalBrackets: false }
 * (case-insensitive, `*` also matches a leading dot, matched against the last path segment), restricted
 * to a strict grammar so that a pattern means what a reader of the policy expects:
 *
 *   *            any run of characters, also empty        ?        exactly one character
 *   [abc] [a-z]  one character of the class               [!a-z]   one character not in it ([^a-z] too)
 *   {exe,scr}    one of the alternatives (two or more, none empty, nesting allowed)
 *   anything else is itself, case-insensitively; write [*] [?] [[] [{] for a literal * ? [ {
 *
 * Refused with a located error (`globProblem`), because another tool or a reader would take them
 * differently: unbalanced or empty brackets and braces, `{exe}` (one alternative), brace ranges
 * `{1..9}`, POSIX classes `[[:alpha:]]`, extglobs `*(x)` `!(x)` `@(a|b)` `+(x)` `?(x)` and `|`, a
 * leading `!` (negation elsewhere), `/` and `\` (names are matched without their folder, and `\`
 * would be an escape), control characters, and for file names a trailing dot or space (names are
 * compared with those removed, as Windows saves them), so the pattern could never match.
 *
 * picomatch turns a glob into a backtracking RegExp whose run time grows with the power of the
 * number of `*` (`*a*a*a*b` against a 1,024-character name ran for minutes), and a hostile message
 * chooses the names. So the matcher here is not a RegExp: braces are expanded (at most
 * MAX_GLOB_ALTERNATIVES, src/limits.ts) and each alternative is matched by the classic wildcard walk, O(name x pattern)
 * at worst. test/policy/glob.test.ts checks that it agrees with picomatch on every accepted pattern.
 */

import { MAX_GLOB_ALTERNATIVES } from '../limits.js';

/** Re-exported for the glob tests (defined in src/limits.ts). */
export { MAX_GLOB_ALTERNATIVES as MAX_ALTERNATIVES };

/** What a compiled glob offers the engine (a RegExp-like `test`). */
export interface GlobMatcher {
  /** The pattern as written. */
  readonly source: string;
  test(value: string): boolean;
}

export type GlobKind = 'file name' | 'header name';

/** One position of an expanded pattern: a wildcard run or one character test. */
/** `fold`: a literal character token's folded form (canon), for the suffix matcher. */
type Token = { star: true } | { star: false; test: (c: string) => boolean; text: string; fold?: string };

/** Parsed pattern: a sequence of pieces; a brace holds alternative sequences. */
type Piece =
  | { kind: 'star' }
  | { kind: 'any' }
  | { kind: 'char'; c: string }
  | { kind: 'class'; negated: boolean; items: { lo: string; hi: string }[] }
  | { kind: 'brace'; alternatives: Piece[][] };

class GlobSyntaxError extends Error {}

const EXTGLOB_LEADERS = new Set(['!', '@', '+', '*', '?']);

function parse(pattern: string, kind: GlobKind): Piece[] {
  const fail = (msg: string): never => {
    throw new GlobSyntaxError(msg);
  };
  let i = 0;

  const parseClass = (): Piece => {
    // at '['
    const start = i;
    i++;
    let negated = false;
    if (pattern[i] === '!' || pattern[i] === '^') {
      negated = true;
      i++;
    }
    const items: { lo: string; hi: string }[] = [];
    for (;;) {
      const c = pattern[i];
      if (c === undefined) fail(`"[" at position ${start + 1} has no closing "]" (write [[] for a literal "[")`);
      if (c === ']') break;
      if (c === '[') fail(`"[" inside a bracket class at position ${i + 1}: POSIX classes such as [[:alpha:]] are not supported (write [a-z])`);
      if (c === '/' || c === '\\') fail(`"${c}" inside a bracket class at position ${i + 1}: file and header names never contain it`);
      if (pattern[i + 1] === '-' && pattern[i + 2] !== undefined && pattern[i + 2] !== ']') {
        const hi = pattern[i + 2]!;
        if (hi === '[' || hi === '/' || hi === '\\') fail(`bad range "${c}-${hi}" at position ${i + 1}`);
        if (hi < c) fail(`range "${c}-${hi}" at position ${i + 1} is reversed (write ${hi}-${c})`);
        items.push({ lo: c!, hi });
        i += 3;
      } else {
        items.push({ lo: c!, hi: c! });
        i++;
      }
    }
    if (items.length === 0) fail(`empty bracket class at position ${start + 1}: a class needs at least one character`);
    i++; // ']'
    return { kind: 'class', negated, items };
  };

  /** Parses until end (depth 0) or until ',' / '}' (inside a brace). */
  const parseSeq = (depth: number): Piece[] => {
    const seq: Piece[] = [];
    while (i < pattern.length) {
      const c = pattern[i]!;
      const prev = pattern[i - 1];
      if (depth > 0 && (c === ',' || c === '}')) return seq;
      if (c === '*') {
        seq.push({ kind: 'star' });
        i++;
      } else if (c === '?') {
        seq.push({ kind: 'any' });
        i++;
      } else if (c === '[') {
        seq.push(parseClass());
      } else if (c === '{') {
        const start = i;
        i++;
        const alternatives: Piece[][] = [];
        for (;;) {
          const altStart = i;
          const alt = parseSeq(depth + 1);
          if (pattern[i] === undefined) fail(`"{" at position ${start + 1} has no closing "}" (write [{] for a literal "{")`);
          if (alt.length === 0) fail(`empty alternative at position ${altStart + 1} in the braces at position ${start + 1}`);
          alternatives.push(alt);
          if (pattern[i] === '}') break;
          i++; // ','
        }
        i++; // '}'
        const body = pattern.slice(start + 1, i - 1);
        if (body.includes('..')) fail(`brace ranges such as {1..9} are not supported (braces at position ${start + 1}): list the alternatives`);
        if (alternatives.length < 2) fail(`"{${body}}" at position ${start + 1} has one alternative: write ${body} without braces, or {a,b} for alternatives`);
        seq.push({ kind: 'brace', alternatives });
      } else if (c === ']' || c === '}') {
        fail(`unbalanced "${c}" at position ${i + 1} (write [${c}] for a literal "${c}")`);
      } else if (c === '(' && prev !== undefined && EXTGLOB_LEADERS.has(prev)) {
        fail(`"${prev}(" at position ${i} reads as an extglob in other tools; extglobs are not supported (write [(] for a literal "(")`);
      } else if (c === '|') {
        fail(`"|" at position ${i + 1}: alternatives are written {a,b}`);
      } else if (c === '/') {
        fail(`"/" at position ${i + 1}: ${kind}s are matched without any folder (the last path segment of a name)`);
      } else if (c === '\\') {
        fail(`"\\" at position ${i + 1}: names are matched without any folder, and "\\" is no escape here (write [*] for a literal "*")`);
      } else if (c === '!' && i === 0) {
        fail('a leading "!" negates the pattern in other tools; negation is not supported (put an allow rule before the strip rule instead)');
      } else {
        seq.push({ kind: 'char', c });
        i++;
      }
    }
    return seq;
  };

  const ctl = /[\x00-\x1f\x7f-\x9f]/.exec(pattern);
  if (ctl) fail(`control character at position ${ctl.index + 1}: ${kind}s are compared with control characters removed`);
  if (pattern.length === 0) fail('empty pattern');
  const seq = parseSeq(0);
  if (i < pattern.length) fail(`unexpected "${pattern[i]}" at position ${i + 1}`);
  if (kind === 'file name' && /[.\s]$/u.test(pattern)) {
    fail('a trailing dot or space never matches: file names are compared with trailing dots and spaces removed (as Windows saves them)');
  }
  return seq;
}

function expand(seq: Piece[]): Piece[][] {
  let out: Piece[][] = [[]];
  for (const p of seq) {
    if (p.kind !== 'brace') {
      for (const o of out) o.push(p);
      continue;
    }
    const alts = p.alternatives.flatMap((a) => expand(a));
    const next: Piece[][] = [];
    for (const o of out) for (const a of alts) next.push([...o, ...a]);
    if (next.length > MAX_GLOB_ALTERNATIVES) throw new GlobSyntaxError(`the braces expand to more than ${MAX_GLOB_ALTERNATIVES} alternatives`);
    out = next;
  }
  return out;
}

/** canon() of each UTF-16 unit, filled as met (at most 65,536 one-character strings). */
const CANON_UNITS: (string | undefined)[] = new Array(0x10000);

/**
 * Case folding of RegExp's `i` flag without `u` (what picomatch's nocase gives): a character stands
 * for its one-character upper case, except that nothing outside ASCII folds into ASCII.
 */
function canon(c: string): string {
  // a pure function of one character: remembered per UTF-16 unit (matching calls it for every character tried)
  if (c.length === 1) {
    const code = c.charCodeAt(0);
    let k = CANON_UNITS[code];
    if (k === undefined) CANON_UNITS[code] = k = canonUncached(c);
    return k;
  }
  return canonUncached(c);
}

function canonUncached(c: string): string {
  const u = c.toUpperCase();
  if (u.length !== 1) return c;
  if (c.charCodeAt(0) >= 128 && u.charCodeAt(0) < 128) return c;
  return u;
}

/** The characters that fold like `c` (enough for the ranges of a bracket class). */
function foldsLike(c: string): string[] {
  const k = canon(c);
  return [...new Set([c, k, k.toLowerCase(), c.toLowerCase()])].filter((x) => x.length === 1 && canon(x) === k);
}

function toTokens(seq: Piece[]): Token[] {
  return seq.map((p): Token => {
    switch (p.kind) {
      case 'star':
        return { star: true };
      case 'any':
        return { star: false, test: () => true, text: '?' };
      case 'char': {
        const k = canon(p.c);
        return { star: false, test: (c) => canon(c) === k, text: p.c, fold: k };
      }
      case 'class': {
        const inClass = (c: string) => foldsLike(c).some((f) => p.items.some((r) => f >= r.lo && f <= r.hi));
        return { star: false, test: (c) => inClass(c) !== p.negated, text: '[...]' };
      }
      default:
        throw new Error('unexpanded brace');
    }
  });
}

/**
 * The matcher of one alternative. `*` followed by literal characters only (`*.exe`, the usual file
 * name rule) is a suffix test: the star takes any prefix, each character exactly one character, so
 * the value matches when its last characters fold like them. Anything else: matchTokens.
 */
function matcherOf(tokens: Token[]): (value: string) => boolean {
  const rest = tokens.slice(1);
  if (tokens[0]?.star && rest.length > 0 && rest.every((t) => !t.star && t.fold !== undefined)) {
    const folds = rest.map((t) => (t as { fold: string }).fold);
    const m = folds.length;
    return (value) => {
      if (value.length < m) return false;
      const at = value.length - m;
      for (let i = 0; i < m; i++) if (canon(value[at + i]!) !== folds[i]) return false;
      return true;
    };
  }
  return (value) => matchTokens(tokens, value);
}

/** Wildcard match with the last-star walk: O(value.length x tokens.length) at worst, no recursion. */
function matchTokens(tokens: Token[], value: string): boolean {
  let i = 0;
  let j = 0;
  let starJ = -1;
  let starI = 0;
  while (i < value.length) {
    const t = tokens[j];
    if (t?.star) {
      starJ = j++;
      starI = i;
    } else if (t?.test(value[i]!)) {
      i++;
      j++;
    } else if (starJ >= 0) {
      j = starJ + 1;
      i = ++starI;
    } else return false;
  }
  while (j < tokens.length && tokens[j]!.star) j++;
  return j === tokens.length;
}

/** Why a name glob is refused (null when it is fine). */
export function globProblem(pattern: string, kind: GlobKind = 'file name'): string | null {
  try {
    expand(parse(pattern, kind));
    return null;
  } catch (e) {
    if (e instanceof GlobSyntaxError) return e.message;
    throw e;
  }
}

/** Compiles a name glob; throws when globProblem() would report a problem (the schema checks first). */
export function compileGlob(pattern: string, kind: GlobKind = 'file name'): GlobMatcher {
  const problem = globProblem(pattern, kind);
  if (problem !== null) throw new Error(`invalid glob "${pattern}": ${problem}`);
  const alternatives = expand(parse(pattern, kind)).map(toTokens).map(matcherOf);
  return {
    source: pattern,
    test: (value: string) => alternatives.some((m) => m(value)),
  };
}

/** The same pattern written for picomatch (literal punctuation escaped, `[!` as `[^`): what the tests compare against. */
export function globToPicomatch(pattern: string, kind: GlobKind = 'file name'): string {
  const problem = globProblem(pattern, kind);
  if (problem !== null) throw new Error(`invalid glob "${pattern}": ${problem}`);
  const esc = (c: string) => (/[\x21-\x2f\x3a-\x40\x5b-\x60\x7b-\x7e]/.test(c) ? `\\${c}` : c);
  const write = (seq: Piece[]): string =>
    seq
      .map((p) => {
        switch (p.kind) {
          case 'star':
            return '*';
          case 'any':
            return '?';
          case 'char':
            return esc(p.c);
          case 'class':
            return `[${p.negated ? '^' : ''}${p.items.map((r) => (r.lo === r.hi ? esc(r.lo) : `${esc(r.lo)}-${esc(r.hi)}`)).join('')}]`;
          default:
            return `{${p.alternatives.map(write).join(',')}}`;
        }
      })
      .join('');
  return write(parse(pattern, kind));
}

/**
 * A content-type pattern (`image/*`, `application/vnd.*`, `*\/*`): `*` is the only wildcard, everything
 * else is itself, case-insensitively. The policy schema allows only token characters, `/` and `*`.
 */
export function compileTypePattern(pattern: string): GlobMatcher {
  const tokens: Token[] = [...pattern].map((c): Token => {
    if (c === '*') return { star: true };
    const k = canon(c);
    return { star: false, test: (x) => canon(x) === k, text: c };
  });
  return { source: pattern, test: (value: string) => matchTokens(tokens, value) };
}
