/**
 * What a config file's validation reports, as `peregrine validate` shows it: one `line path:
 * message` string per issue, none when the file is valid.
 */
import { ConfigError, parseConfigText } from '../../src/config/loader.ts';

export function configProblems(yaml: string, env: NodeJS.ProcessEnv = {}): string[] {
  try {
    parseConfigText(yaml, 'gw.yaml', env);
  } catch (err) {
    if (err instanceof ConfigError) return err.issues.map((i) => `${i.line ?? '-'} ${i.path}: ${i.message}`);
    throw err;
  }
  return [];
}
