/**
 * Environment variables in the config file: `${NAME}` and `${NAME:-default}` in any string, map keys
 * included (a host name from `${DOMAIN}`), replaced after the JSON is parsed and before it is
 * validated, as Docker Compose and Caddy (`{$NAME}`) do. `$${` stands for a literal `${`. A variable
 * that is not set (and has no default) is a config problem at the path where it is used, so a
 * container started without it keeps its old config, or does not start, with the reason.
 */
import { formatPath } from './json-path.js';
import type { ConfigIssue } from './load.js';

const NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** One string with its variables replaced, or the problem with it. */
function expand(s: string, env: NodeJS.ProcessEnv): { value: string } | { problem: string } {
  if (!s.includes('$')) return { value: s };
  let out = '';
  let at = 0;
  for (;;) {
    const dollar = s.indexOf('$', at);
    if (dollar === -1) return { value: out + s.slice(at) };
    out += s.slice(at, dollar);
    if (s.startsWith('$${', dollar)) {
      out += '${';
      at = dollar + 3;
      continue;
    }
    if (s[dollar + 1] !== '{') {
      out += '$';
      at = dollar + 1;
      continue;
    }
    const close = s.indexOf('}', dollar + 2);
    if (close === -1) return { problem: `"\${" at character ${dollar + 1} has no closing "}": write \${NAME}, or $\${ for a literal "\${"` };
    const inner = s.slice(dollar + 2, close);
    const sep = inner.indexOf(':-');
    const name = sep === -1 ? inner : inner.slice(0, sep);
    if (!NAME_RE.test(name)) return { problem: `\${${inner}} does not name an environment variable (letters, digits and _, not starting with a digit); write $\${ for a literal "\${"` };
    // A string or nothing: `${constructor}` must not read Object.prototype's member through process.env.
    const set = env[name];
    if (typeof set === 'string' && (set !== '' || sep === -1)) out += set;
    else if (sep !== -1) out += inner.slice(sep + 2);
    else return { problem: `the environment variable ${name} is not set; set it, or give a default with \${${name}:-value}` };
    at = close + 1;
  }
}

/** Replaces `${NAME}` in every string and key of a parsed config; the problems carry the paths where they are. */
export function substituteEnv(json: unknown, env: NodeJS.ProcessEnv): { value: unknown; issues: ConfigIssue[] } {
  const issues: ConfigIssue[] = [];
  const walk = (v: unknown, path: PropertyKey[]): unknown => {
    if (typeof v === 'string') {
      const r = expand(v, env);
      if ('problem' in r) {
        issues.push({ path: formatPath(path), message: r.problem });
        return v;
      }
      return r.value;
    }
    if (Array.isArray(v)) return v.map((item, i) => walk(item, [...path, i]));
    if (v === null || typeof v !== 'object') return v;
    const out: Record<string, unknown> = {};
    const from = new Map<string, string>();
    for (const [key, item] of Object.entries(v as Record<string, unknown>)) {
      const r = expand(key, env);
      let name = key;
      if ('problem' in r) issues.push({ path: formatPath([...path, key]), message: `in this key: ${r.problem}` });
      else name = r.value;
      const earlier = from.get(name);
      if (earlier !== undefined) {
        issues.push({ path: formatPath([...path, key]), message: `this key becomes ${JSON.stringify(name)}, as ${JSON.stringify(earlier)} does; each key must differ once variables are replaced` });
        continue;
      }
      from.set(name, key);
      // Defined, not assigned: a key "__proto__" stays a key.
      Object.defineProperty(out, name, { value: walk(item, [...path, name]), enumerable: true, writable: true, configurable: true });
    }
    return out;
  };
  const value = walk(json, []);
  return { value, issues };
}
