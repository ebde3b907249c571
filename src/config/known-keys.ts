/**
 * What an unknown key in the config should have been: the keys the schema allows where it stands, and the
 * one closest to it (`"tsl"` → `"tls"`), so that a typo is answered with its fix, as git and cargo do.
 */
import type { z } from 'zod';

type Schema = z.core.$ZodType;

/** The schema under the wrappers that do not change a value's shape (optional, default, a pipe's input…). */
function unwrap(schema: Schema): Schema {
  let s = schema;
  for (;;) {
    const def = s._zod.def as z.core.$ZodTypeDef & { innerType?: Schema; in?: Schema; getter?: () => Schema };
    if (def.innerType !== undefined) s = def.innerType;
    else if (def.type === 'pipe' && def.in !== undefined) s = def.in;
    else if (def.type === 'lazy' && def.getter !== undefined) s = def.getter();
    else return s;
  }
}

/** The key lists of every object shape the schema may have at `path`. */
function shapesAt(schema: Schema, path: readonly PropertyKey[]): string[][] {
  const s = unwrap(schema);
  const def = s._zod.def;
  if (def.type === 'union') return (def as z.core.$ZodUnionDef).options.flatMap((o) => shapesAt(o, path));
  if (path.length === 0) return def.type === 'object' ? [Object.keys((def as z.core.$ZodObjectDef).shape)] : [];
  const [seg, ...rest] = path;
  if (def.type === 'object') {
    const child = (def as z.core.$ZodObjectDef).shape[String(seg)];
    return child === undefined ? [] : shapesAt(child, rest);
  }
  if (def.type === 'record') return shapesAt((def as z.core.$ZodRecordDef).valueType, rest);
  if (def.type === 'array') return shapesAt((def as z.core.$ZodArrayDef).element, rest);
  return [];
}

/**
 * The keys the object at `path` may have, by `schema`; where several shapes are possible (a union), the one
 * whose keys `value` (the object as written) uses most. Empty when the schema names none.
 */
export function knownKeysAt(schema: Schema, path: readonly PropertyKey[], value: unknown): string[] {
  const used = value !== null && typeof value === 'object' ? Object.keys(value) : [];
  let best: string[] = [];
  let bestScore = -1;
  for (const keys of shapesAt(schema, path)) {
    const score = used.filter((k) => keys.includes(k)).length;
    if (score > bestScore) [best, bestScore] = [keys, score];
  }
  return best;
}

/** Edit distance with adjacent transpositions (optimal string alignment): `"lgo"` is one edit from `"log"`. */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * The known key `key` most likely misspells: case aside, at most one edit away for a key of up to five
 * characters, two for a longer one; undefined when none is that close (better no hint than a wrong one).
 */
export function closestKey(key: string, known: readonly string[]): string | undefined {
  const limit = key.length <= 5 ? 1 : 2;
  let best: string | undefined;
  let bestDistance = limit + 1;
  for (const k of known) {
    const distance = editDistance(key.toLowerCase(), k.toLowerCase());
    if (distance < bestDistance) [best, bestDistance] = [k, distance];
  }
  return best;
}
