/**
 * The config reference in Markdown, generated from the JSON Schema (itself
 * generated from the zod schema), so docs/config-reference.md cannot drift.
 */
import { z } from 'zod';
import { ConfigSchema } from '../config/schema.js';

interface Node {
  type?: string | string[];
  description?: string;
  default?: unknown;
  enum?: unknown[];
  const?: unknown;
  properties?: Record<string, Node>;
  required?: string[];
  additionalProperties?: Node | boolean;
  propertyNames?: Node;
  items?: Node;
  anyOf?: Node[];
  pattern?: string;
}

function typeOf(n: Node): string {
  if (n.anyOf !== undefined) return n.anyOf.map(typeOf).join(' \\| ');
  if (n.enum !== undefined) return n.enum.map((v) => `\`${JSON.stringify(v)}\``).join(' \\| ');
  if (n.const !== undefined) return `\`${JSON.stringify(n.const)}\``;
  if (n.type === 'array') return `${n.items === undefined ? 'any' : typeOf(n.items)}[]`;
  if (n.type === 'object' && n.properties === undefined && typeof n.additionalProperties === 'object') return 'map';
  return Array.isArray(n.type) ? n.type.join(' \\| ') : (n.type ?? 'any');
}

function cell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

function walk(n: Node, path: string, required: boolean, rows: string[]): void {
  if (path !== '') {
    const def = n.default === undefined ? (required ? 'required' : '') : `\`${JSON.stringify(n.default)}\``;
    rows.push(`| \`${path}\` | ${typeOf(n)} | ${def} | ${cell(n.description ?? '')} |`);
  }
  const objects = [n, ...(n.anyOf ?? [])].filter((b) => b.type === 'object' || b.properties !== undefined);
  for (const obj of objects) {
    for (const [key, child] of Object.entries(obj.properties ?? {})) {
      if (key === '$schema' && path === '') continue;
      const childPath = path === '' ? key : `${path}.${key}`;
      walk(child, childPath, (obj.required ?? []).includes(key), rows);
    }
    if (typeof obj.additionalProperties === 'object' && obj.properties === undefined) {
      walk({ ...obj.additionalProperties, description: obj.additionalProperties.description ?? 'One entry.' }, `${path}.<name>`, false, rows);
    }
  }
  const arrays = [n, ...(n.anyOf ?? [])].filter((b) => b.type === 'array' && b.items !== undefined && (b.items.type === 'object' || b.items.anyOf !== undefined));
  for (const arr of arrays) {
    const items = arr.items as Node;
    const objs = [items, ...(items.anyOf ?? [])].filter((b) => b.properties !== undefined);
    for (const obj of objs) {
      for (const [key, child] of Object.entries(obj.properties ?? {})) walk(child, `${path}[].${key}`, (obj.required ?? []).includes(key), rows);
    }
  }
}

/** The config reference as Markdown. */
export function configReferenceMarkdown(): string {
  const schema = z.toJSONSchema(ConfigSchema, { io: 'input', unrepresentable: 'any' }) as Node;
  const rows: string[] = [];
  walk(schema, '', true, rows);
  const seen = new Set<string>();
  const unique = rows.filter((r) => (seen.has(r) ? false : (seen.add(r), true)));
  return [
    '# Config reference',
    '',
    'Generated from the schema by `node dist/src/main.js schema --markdown` (a test keeps this file in step). Paths use `<name>` for map keys and `[]` for list items. Durations are strings like `"500ms"`, `"30s"`, `"5m"`, `"1h"`, `"90d"`; sizes like `"16kb"`, `"10mb"`. Unknown keys are errors.',
    '',
    '| field | type | default | description |',
    '|---|---|---|---|',
    ...unique,
    '',
  ].join('\n');
}
