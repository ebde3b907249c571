/** JSON paths for config issues, without the schema (so that callers need not load zod). */

const IDENT_RE = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/** Formats a path array as `a.b["c.d"][1]`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (typeof seg === 'string' && IDENT_RE.test(seg)) out += out === '' ? seg : `.${seg}`;
    else out += `[${JSON.stringify(String(seg))}]`;
  }
  return out === '' ? '(root)' : out;
}
