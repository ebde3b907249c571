/**
 * Reading and validating a config file. Never throws: the result lists every
 * issue at once, each with its JSON path and a reason. This module loads zod and
 * the schema; the server runs it in a short-lived child process
 * (load-in-child.ts), so that neither stays in its memory.
 */
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type { z } from 'zod';
import { ConfigSchema, type Config } from './schema.js';
import { formatPath } from './json-path.js';
import { normalizeRoutePath } from './plan.js';
import { substituteEnv } from './env-vars.js';
import { closestKey, knownKeysAt } from './known-keys.js';
import { permissionHint } from './permission-hint.js';

/** One problem found in a config file. */
export interface ConfigIssue {
  /** JSON path such as `hosts["app.example.com"].routes[1].upstream`. */
  readonly path: string;
  /** What is wrong and, where possible, how to fix it. */
  readonly message: string;
}

/** A loaded config, or every issue that prevents loading it. */
export type LoadResult =
  | { readonly ok: true; readonly config: Config; readonly file: string; readonly baseDir: string }
  | { readonly ok: false; readonly file: string; readonly issues: readonly ConfigIssue[] };

function shorten(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let cur: unknown = root;
  for (const seg of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[seg];
  }
  return cur;
}

/** An unknown key: the key it most likely misspells, or else the keys allowed where it stands. */
function unknownKeyMessage(key: string, known: readonly string[]): string {
  const meant = closestKey(key, known);
  if (meant !== undefined) return `unknown key, did you mean ${JSON.stringify(meant)}?`;
  const allowed = known.filter((k) => k !== '$schema');
  if (allowed.length === 0) return 'unknown key (check the spelling; see docs/config-reference.md)';
  return `unknown key; allowed here: ${allowed.map((k) => JSON.stringify(k)).join(', ')} (see docs/config-reference.md)`;
}

function describeIssue(issue: z.core.$ZodIssue, input: unknown): ConfigIssue[] {
  const path = issue.path;
  switch (issue.code) {
    case 'unrecognized_keys': {
      const known = knownKeysAt(ConfigSchema, path, valueAt(input, path));
      return issue.keys.map((key) => ({ path: formatPath([...path, key]), message: unknownKeyMessage(key, known) }));
    }
    case 'invalid_key': {
      // A record key (a host name) failed: report the key's own problem, not the whole value under it.
      const key = path.at(-1);
      const reasons = issue.issues.map((i) => i.message).join('; ');
      return [{ path: formatPath(path), message: `${reasons}, got ${shorten(key)}` }];
    }
    case 'invalid_type': {
      const got = valueAt(input, path);
      if (got === undefined) return [{ path: formatPath(path), message: `required: expected ${issue.expected}` }];
      return [{ path: formatPath(path), message: `expected ${issue.expected}, got ${shorten(got)}` }];
    }
    case 'invalid_union': {
      const got = valueAt(input, path);
      const branch = pickUnionBranch(issue.errors, path, input);
      if (branch === 'ambiguous') {
        // An object with none of the keys any branch needs (tls: {}): name the shapes that would do.
        const shapes = issue.errors.map((b) => b.map((i) => JSON.stringify(String(i.path[0]))).join(' and '));
        return [{ path: formatPath(path), message: `required: set ${shapes.join(', or ')}` }];
      }
      if (branch === undefined) {
        // No branch got inside the value: say which shapes would do, and that it is missing when it is.
        const expected = [...new Set(issue.errors.flatMap((b) => b.flatMap((i) => (i.code === 'invalid_type' ? [i.expected] : i.code === 'invalid_value' ? i.values.map((v) => JSON.stringify(v)) : []))))];
        const what = expected.length === 0 ? issue.message : `expected ${expected.slice(0, -1).join(', ')}${expected.length > 1 ? ' or ' : ''}${expected.at(-1)}`;
        if (got === undefined) return [{ path: formatPath(path), message: `required: ${what}` }];
        return [{ path: formatPath(path), message: `${what}, got ${shorten(got)}` }];
      }
      return branch.flatMap((i) => describeIssue({ ...i, path: [...path, ...i.path] } as z.core.$ZodIssue, input));
    }
    default: {
      const got = valueAt(input, path);
      const hasGot = got !== undefined && !issue.message.includes('got ');
      return [{ path: formatPath(path), message: hasGot ? `${issue.message}, got ${shorten(got)}` : issue.message }];
    }
  }
}

/**
 * Which branch of a failed union to report: the one the user most likely meant. Branches that got inside
 * the value (an issue below it, or unknown keys in an object) come first: of those, the one whose keys the
 * value uses (fewest unknown keys: {"cert": "x"} meant the cert/key branch, so its missing "key" is the
 * problem, not the acme branch's), then the one whose issues go deepest; 'ambiguous' when several only
 * miss keys (an empty object). Otherwise a branch whose type matched and whose check failed (a number
 * too big where a number or "auto" would do). undefined when the value fits no branch's type.
 */
function pickUnionBranch(branches: readonly z.core.$ZodIssue[][], path: readonly PropertyKey[], input: unknown): z.core.$ZodIssue[] | 'ambiguous' | undefined {
  const unknownKeys = (b: readonly z.core.$ZodIssue[]): number => b.reduce((n, i) => n + (i.code === 'unrecognized_keys' ? i.keys.length : 0), 0);
  const missesOnly = (b: readonly z.core.$ZodIssue[]): boolean => b.every((i) => i.code !== 'unrecognized_keys' && valueAt(input, [...path, ...i.path]) === undefined);
  const depth = (b: readonly z.core.$ZodIssue[]): number => Math.max(...b.map((i) => i.path.length + (i.code === 'invalid_type' ? 0 : 0.5)));
  const inside = branches.filter((b) => b.some((i) => i.path.length > 0 || i.code === 'unrecognized_keys'));
  if (inside.length === 0) return branches.find((b) => b.every((i) => i.code !== 'invalid_type' && i.code !== 'invalid_value'));
  const fewest = Math.min(...inside.map(unknownKeys));
  const candidates = inside.filter((b) => unknownKeys(b) === fewest);
  if (candidates.length > 1 && fewest === 0 && candidates.every(missesOnly)) return 'ambiguous';
  let best = candidates[0];
  for (const b of candidates) if (best === undefined || depth(b) > depth(best)) best = b;
  return best;
}

/**
 * Keys named `__proto__`, wherever they are. JSON keeps such a key, but zod's records leave it out without a
 * word, so `"match": {"headers": {"__proto__": "*"}}` would become a route matching every request, and a
 * header rule or a host of that name would vanish. No host, header, cookie or query name can be `__proto__`.
 */
function protoKeyIssues(v: unknown, path: PropertyKey[], issues: ConfigIssue[]): ConfigIssue[] {
  if (Array.isArray(v)) v.forEach((item, i) => protoKeyIssues(item, [...path, i], issues));
  else if (v !== null && typeof v === 'object') {
    for (const key of Object.keys(v)) {
      if (key === '__proto__') issues.push({ path: formatPath([...path, key]), message: '"__proto__" cannot be a name here (no host, header, cookie or query name can be __proto__); remove or rename this key' });
      else protoKeyIssues((v as Record<string, unknown>)[key], [...path, key], issues);
    }
  }
  return issues;
}

/** Validates an already-parsed JSON value. */
export function validateConfig(input: unknown): { ok: true; config: Config } | { ok: false; issues: ConfigIssue[] } {
  const reserved = protoKeyIssues(input, [], []);
  if (reserved.length > 0) return { ok: false, issues: reserved };
  const result = ConfigSchema.safeParse(input);
  if (result.success) {
    const cross = checkCrossReferences(result.data);
    return cross.length === 0 ? { ok: true, config: result.data } : { ok: false, issues: cross };
  }
  return { ok: false, issues: result.error.issues.flatMap((i) => describeIssue(i, input)) };
}

type RouteMatchConfig = NonNullable<Config['hosts'][string]['routes'][number]['match']>;

/** A route's match with its keys in one order (header names in lower case), so two that say the same compare equal. */
function canonicalMatch(m: RouteMatchConfig): unknown {
  const sorted = (r: Record<string, string | string[]> | undefined, lower: boolean): unknown =>
    r === undefined ? null : Object.entries(r).map(([k, v]) => [lower ? k.toLowerCase() : k, typeof v === 'string' ? [v] : [...v].sort()]).sort();
  return [m.methods === undefined ? null : [...m.methods].sort(), sorted(m.headers, true), sorted(m.query, false), sorted(m.cookies, false), m.clientAddresses === undefined ? null : [...m.clientAddresses].sort()];
}

/** Checks that zod cannot express: names unique across hosts, defaultHost declared, ACME settings present. */
function checkCrossReferences(config: Config): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const owner = new Map<string, string>();
  let needsAcme = false;
  for (const [name, host] of Object.entries(config.hosts)) {
    const names = [name, ...host.aliases];
    if ('acme' in host.tls) {
      needsAcme = true;
      const wildcard = names.find((n) => n.startsWith('*.'));
      if (wildcard !== undefined && config.acme !== undefined && config.acme.dns01 === undefined) {
        issues.push({
          path: formatPath(['hosts', name, 'tls', 'acme']),
          message: `${JSON.stringify(wildcard)} is a wildcard name, which a CA only validates over DNS-01: set acme.dns01.command to a program that sets the TXT record (see docs/certificates.md), or mount a certificate for it`,
        });
      }
    }
    names.forEach((n, i) => {
      const prev = owner.get(n);
      const where = i === 0 ? formatPath(['hosts', name]) : formatPath(['hosts', name, 'aliases', i - 1]);
      if (prev !== undefined) issues.push({ path: where, message: `the name ${JSON.stringify(n)} is already served by hosts[${JSON.stringify(prev)}]` });
      else owner.set(n, name);
    });
    // One route per path, or several that differ by "match" (and at most one without).
    const seen = new Map<string, number>();
    host.routes.forEach((route, i) => {
      const key = `${normalizeRoutePath(route.path)} ${route.match === undefined ? '' : JSON.stringify(canonicalMatch(route.match))}`;
      const first = seen.get(key);
      if (first === undefined) {
        seen.set(key, i);
        return;
      }
      const other = formatPath(['hosts', name, 'routes', first]);
      issues.push({
        path: formatPath(['hosts', name, 'routes', i, route.match === undefined ? 'path' : 'match']),
        message:
          route.match === undefined
            ? `${other} already serves the path ${JSON.stringify(route.path)} in this host, so this route would never be used; give one of them a "match", or merge them`
            : `${other} has the same path and the same "match", so this route would never be used; change or merge them`,
      });
    });
  }
  if (config.defaultHost !== undefined && !owner.has(config.defaultHost)) {
    issues.push({ path: 'defaultHost', message: `${JSON.stringify(config.defaultHost)} is not a name of any host in "hosts"` });
  }
  if (config.acme?.challenge === 'dns-01' && config.acme.dns01 === undefined) {
    issues.push({ path: 'acme.dns01', message: 'acme.challenge is "dns-01": set acme.dns01.command to a program that sets the TXT record (see docs/certificates.md)' });
  }
  if (needsAcme && config.acme === undefined) {
    issues.push({ path: 'acme', message: 'a host uses {"acme": true} but there is no "acme" section; add one with at least "email" and "termsOfServiceAgreed": true' });
  }
  if (config.listen.http !== null && config.listen.http.port === config.listen.https.port) {
    issues.push({ path: 'listen.http.port', message: `the HTTP and HTTPS listeners cannot share port ${config.listen.https.port}` });
  }
  // Every other port Portico listens on: the stream ports may collide with none of them, nor with each other.
  const ports = new Map<number, string>([[config.listen.https.port, 'listen.https']]);
  if (config.listen.http !== null) ports.set(config.listen.http.port, 'listen.http');
  if (config.admin !== undefined) {
    const taken = ports.get(config.admin.port);
    if (taken !== undefined) issues.push({ path: 'admin.port', message: `port ${config.admin.port} is already used by ${taken}` });
    else ports.set(config.admin.port, 'admin');
  }
  config.streams.forEach((st, i) => {
    const taken = ports.get(st.port);
    if (taken !== undefined) issues.push({ path: formatPath(['streams', i, 'port']), message: `port ${st.port} is already used by ${taken}` });
    else ports.set(st.port, formatPath(['streams', i]));
  });
  return issues;
}

function jsonErrorIssue(text: string, err: unknown): ConfigIssue {
  const message = err instanceof Error ? err.message : String(err);
  const pos = /position (\d+)/.exec(message);
  if (pos !== null) {
    const offset = Number(pos[1]);
    const before = text.slice(0, offset);
    const line = before.split('\n').length;
    const column = offset - before.lastIndexOf('\n');
    return { path: `(line ${line}, column ${column})`, message: `invalid JSON: ${message}` };
  }
  return { path: '(file)', message: `invalid JSON: ${message}` };
}

/** Why the config file could not be read, and what to do about it. */
function readErrorMessage(abs: string, err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code ?? 'error';
  const why: Record<string, string> = {
    ENOENT: 'there is no such file; check the path (a relative one is taken from the working directory)',
    EISDIR: 'it is a directory; name the config file in it',
    EACCES: `permission denied; ${permissionHint()}`,
    ENOTDIR: 'a directory in its path is a file; check the path',
    ELOOP: 'its symbolic links form a loop; check where they point',
  };
  return `cannot read ${abs} (${code}): ${why[code] ?? (err as Error).message}`;
}

/** Reads, parses and validates a config file. */
export async function loadConfigFile(file: string): Promise<LoadResult> {
  const abs = resolve(file);
  let text: string;
  try {
    text = await readFile(abs, 'utf8');
  } catch (err) {
    return { ok: false, file: abs, issues: [{ path: '(file)', message: readErrorMessage(abs, err) }] };
  }
  // A byte order mark (Windows Notepad, PowerShell's Out-File) is not JSON, but says nothing: drop it, as jq does.
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  if (text.trim() === '') return { ok: false, file: abs, issues: [{ path: '(file)', message: 'the file is empty; a config is a JSON object with at least "hosts" (see the config reference in README.md)' }] };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    return { ok: false, file: abs, issues: [jsonErrorIssue(text, err)] };
  }
  const substituted = substituteEnv(json, process.env);
  if (substituted.issues.length > 0) return { ok: false, file: abs, issues: substituted.issues };
  const result = validateConfig(substituted.value);
  if (!result.ok) return { ok: false, file: abs, issues: result.issues };
  return { ok: true, config: result.config, file: abs, baseDir: dirname(abs) };
}
