/**
 * `portico check FILE`: validates a config (schema, cross-references,
 * certificate files) without opening a socket.
 */
import { compilePlan } from '../config/compile.js';
import type { ConfigIssue, LoadResult } from '../config/load.js';
import { loadConfigFileInChild } from '../config/load-in-child.js';
import { TargetRegistry } from '../upstream/target.js';
import { CHAIN_WARNING, OCSP_CHAIN_WARNING } from '../tls/cert-pair.js';

/** Checks a config file (or the result of loading it, when the caller has one); returns the issues (empty when valid). */
export async function checkConfigFile(file: string, preloaded?: LoadResult): Promise<{ file: string; issues: readonly ConfigIssue[]; hosts: number; warnings: readonly string[] }> {
  const loaded = preloaded ?? (await loadConfigFileInChild(file));
  if (!loaded.ok) return { file: loaded.file, issues: loaded.issues, hosts: 0, warnings: [] };
  const targets = new TargetRegistry();
  const compiled = await compilePlan(loaded.config, loaded.baseDir, { targets, generation: 0 });
  targets.closeAll();
  if (!compiled.ok) return { file: loaded.file, issues: compiled.issues, hosts: 0, warnings: [] };
  // What serves, but not every client: certificate files without the intermediate that issued them.
  const warnings: string[] = [];
  for (const pair of compiled.certs.values()) {
    if (pair.missingIssuer !== undefined) warnings.push(`${pair.certFile}: ${CHAIN_WARNING} (missing: ${pair.missingIssuer.issuer}, at ${pair.missingIssuer.url})`);
    // Only while stapling is on: with it off, nothing asks the responder.
    if (compiled.plan.ocspStapling && pair.ocspResponder?.issuerInFile === false) warnings.push(`${pair.certFile}: ${OCSP_CHAIN_WARNING} (responder: ${pair.ocspResponder.url}, issuer: ${pair.leaf.issuer.replace(/\n/g, ', ')})`);
  }
  return { file: loaded.file, issues: [], hosts: compiled.plan.hosts.length, warnings };
}
