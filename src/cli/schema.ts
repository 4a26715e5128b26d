/**
 * `peregrine schema`: the JSON Schema (draft 2020-12) of the config file, generated from the zod
 * schema, for editors (yaml-language-server `# yaml-language-server: $schema=...`) and CI.
 * It describes the input side: durations and sizes are strings or numbers, defaults are shown.
 */
import { configInputJsonSchema } from '../config/key-suggestions.ts';
import type { CliOutput } from './validate.ts';

export const CONFIG_SCHEMA_ID = 'https://peregrine.dev/schemas/config.json';

export function configJsonSchema(): object {
  const schema = configInputJsonSchema();
  return {
    $schema: schema.$schema,
    $id: CONFIG_SCHEMA_ID,
    title: 'Peregrine gateway configuration',
    ...schema,
  };
}

export function runSchema(out: Pick<CliOutput, 'stdout'>): number {
  out.stdout(JSON.stringify(configJsonSchema(), null, 2));
  return 0;
}
