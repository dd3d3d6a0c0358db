// The one deterministic PRNG of the scripts (the MIME, session and ZIP fuzzers, the benchmarks'
// mail corpus in scripts/lib/mail-corpus.mjs): sfc32 seeded through a string hash of its seed parts
// (`new Rng('session-fuzz', seed, index)`), so that every case (and every mutation inside a case) has
// its own independent stream: removing one mutation while minimising does not change what the
// others draw.

function xmur3(str) {
  let h = 1779033703 ^ str.length;
  for (let i = 0; i < str.length; i++) {
    h = Math.imul(h ^ str.charCodeAt(i), 3432918353);
    h = (h << 13) | (h >>> 19);
  }
  return () => {
    h = Math.imul(h ^ (h >>> 16), 2246822507);
    h = Math.imul(h ^ (h >>> 13), 3266489909);
    return (h ^= h >>> 16) >>> 0;
  };
}

export class Rng {
  constructor(...seedParts) {
    const s = xmur3(seedParts.join('\u0000'));
    this.a = s();
    this.b = s();
    this.c = s();
    this.d = s();
    for (let i = 0; i < 12; i++) this.u32();
  }
  u32() {
    let { a, b, c, d } = this;
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    this.a = a;
    this.b = b;
    this.c = c;
    this.d = d;
    return t >>> 0;
  }
  /** float in [0, 1) */
  next() {
    return this.u32() / 4294967296;
  }
  /** integer in [lo, hi] */
  int(lo, hi) {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  chance(p) {
    return this.next() < p;
  }
  /** n random bytes */
  bytes(n) {
    const out = Buffer.alloc(n);
    for (let i = 0; i < n; i++) out[i] = this.u32() >>> 24;
    return out;
  }
  pick(arr) {
    return arr[Math.floor(this.next() * arr.length)];
  }
  /** weighted pick from [[weight, value], ...] */
  weighted(list) {
    let total = 0;
    for (const [w] of list) total += w;
    let r = this.next() * total;
    for (const [w, v] of list) {
      if ((r -= w) < 0) return v;
    }
    return list[list.length - 1][1];
  }
  shuffle(arr) {
    const a = arr.slice();
    for (let i = a.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [a[i], a[j]] = [a[j], a[i]];
    }
    return a;
  }
  /** child stream, independent of how much this one is used later */
  fork(...label) {
    return new Rng(this.a, this.b, this.c, this.d, ...label);
  }
}
