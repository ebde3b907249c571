/**
 * `portico check FILE`: validates a config (schema, cross-references,
 * certificate files) without opening a socket.
 */
import { compilePlan } from '../config/compile.js';
import { loadConfigFile, type ConfigIssue } from '../config/load.js';
import { TargetRegistry } from '../upstream/target.js';

/** Checks a config file; returns the issues (empty when valid). */
export async function checkConfigFile(file: string): Promise<{ file: string; issues: readonly ConfigIssue[]; hosts: number }> {
  const loaded = await loadConfigFile(file);
  if (!loaded.ok) return { file: loaded.file, issues: loaded.issues, hosts: 0 };
  const targets = new TargetRegistry();
  const compiled = await compilePlan(loaded.config, loaded.baseDir, { targets, generation: 0 });
  targets.closeAll();
  if (!compiled.ok) return { file: loaded.file, issues: compiled.issues, hosts: 0 };
  return { file: loaded.file, issues: [], hosts: compiled.plan.hosts.length };
}
