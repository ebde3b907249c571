/**
 * Parsers for the config's duration and size strings. Called once at compile
 * time; the schema has already checked the shape.
 */

const DURATION_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const SIZE_BYTES: Record<string, number> = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3 };

/** Parses `"30s"` → 30000. */
export function parseDurationMs(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(text);
  if (m === null) throw new RangeError(`invalid duration ${JSON.stringify(text)}`);
  return Math.round(Number(m[1]) * (DURATION_MS[m[2] as string] as number));
}

/** Parses `"16kb"` → 16384. */
export function parseSizeBytes(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(b|kb|mb|gb)$/i.exec(text);
  if (m === null) throw new RangeError(`invalid size ${JSON.stringify(text)}`);
  return Math.round(Number(m[1]) * (SIZE_BYTES[(m[2] as string).toLowerCase()] as number));
}
