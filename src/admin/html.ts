/** Server-rendered HTML of the admin pages: every interpolated string goes through esc(). */

const ESC: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function esc(s: unknown): string {
  return String(s ?? '').replace(/[&<>"']/g, (c) => ESC[c]!);
}

/** Tagged template: interpolations are escaped unless they are Html (already rendered). */
export class Html {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

export function html(strings: TemplateStringsArray, ...values: unknown[]): Html {
  let out = strings[0]!;
  values.forEach((v, i) => {
    out += (Array.isArray(v) ? v.map((x) => (x instanceof Html ? x.text : esc(x))).join('') : v instanceof Html ? v.text : esc(v)) + strings[i + 1]!;
  });
  return new Html(out);
}

export const CSP = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

export const CSS = `body{font-family:system-ui,sans-serif;margin:2em auto;max-width:70em;padding:0 1em;color:#222}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}
code,pre{background:#f4f4f4;padding:.1em .3em;word-break:break-all;white-space:pre-wrap}nav a{margin-right:1em}
form.inline{display:inline}.err{color:#a00}.ok{color:#070}label{margin-right:.8em}`;

/** The page's little script: asks before a delete. */
export const JS = `document.addEventListener('submit',function(e){var f=e.target;if(f&&f.dataset&&f.dataset.confirm&&!window.confirm(f.dataset.confirm))e.preventDefault();});`;

export function page(title: string, body: Html, opts: { nav?: boolean } = {}): string {
  const nav = opts.nav === false ? html`` : html`<nav><a href="/">postern admin</a><a href="/ca">CA certificate</a><a href="/quarantine">quarantine</a></nav>`;
  return `<!doctype html>\n${html`<html lang="en"><head><meta charset="utf-8"><title>${title}</title><link rel="stylesheet" href="/static/admin.css"><script src="/static/admin.js" defer></script></head><body>${nav}<h1>${title}</h1>${body}</body></html>`.text}\n`;
}
