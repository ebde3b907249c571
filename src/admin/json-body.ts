/**
 * Admin API request bodies: one JSON object with known keys. Every error says what was wrong and
 * ends with an example of what to send.
 */

/** A short description of a JSON value that is not what was asked for. */
export function describeJson(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return `the string ${JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value)}`;
  return `a ${typeof value}`;
}

/**
 * `text` as a JSON object whose keys are all in `keys` (`takes` says which, for the message), or what is
 * wrong with it; `example` is a body to send instead.
 */
export function parseJsonObject(
  text: string,
  keys: readonly string[],
  takes: string,
  example: string,
): { readonly ok: true; readonly body: Readonly<Record<string, unknown>> } | { readonly ok: false; readonly error: string } {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return { ok: false, error: `the request body is not valid JSON (${(err as Error).message}); send JSON such as ${example}` };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, error: `the request body is ${describeJson(value)}, not a JSON object; send JSON such as ${example}` };
  }
  const body = value as Record<string, unknown>;
  const unknownKey = Object.keys(body).find((k) => !keys.includes(k));
  if (unknownKey !== undefined) return { ok: false, error: `unknown key ${JSON.stringify(unknownKey)} in the request body; it takes ${takes}: ${example}` };
  return { ok: true, body };
}
