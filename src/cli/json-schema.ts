/**
 * The JSON Schema of the config, generated from the zod schema (written to
 * config/portico.schema.json by `npm run schema`, so editors autocomplete).
 */
import { z } from 'zod';
import { ConfigSchema } from '../config/schema.js';

/** The config's JSON Schema, as the text written to config/portico.schema.json. */
export function configJsonSchema(): string {
  const schema = z.toJSONSchema(ConfigSchema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  return `${JSON.stringify({ ...schema, $id: 'https://portico.dev/portico.schema.json', title: 'Portico configuration' }, null, 2)}\n`;
}
