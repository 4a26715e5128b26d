/**
 * A Dockerfile read without Docker: the instructions of its last stage (the image), and what they
 * make of the image (workdir, environment, entrypoint, command, health check, exposed ports).
 */
import { readFileSync } from 'node:fs';

export interface Instruction {
  readonly keyword: string;
  readonly args: string;
}

export interface DockerImage {
  /** Instructions of the last stage, continuation lines joined. */
  readonly stage: readonly Instruction[];
  /** The last instruction of that keyword's arguments. */
  one(keyword: string): string | undefined;
  readonly workdir: string | undefined;
  /** ENV KEY=value ... */
  readonly env: Readonly<Record<string, string>>;
  /** The exec (JSON) forms; undefined when absent. */
  readonly entrypoint: string[] | undefined;
  readonly cmd: string[] | undefined;
  readonly healthcheck: string[] | undefined;
  readonly exposed: number[];
}

const execForm = (args: string | undefined) =>
  args === undefined ? undefined : (JSON.parse(args) as string[]);

export function readDockerfile(file: string): DockerImage {
  const text = readFileSync(file, 'utf8').replace(/\\\n/g, ' ');
  const all = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => {
      const [keyword, ...rest] = l.split(/\s+/);
      return { keyword: keyword!.toUpperCase(), args: rest.join(' ') };
    });
  const stage = all.slice(all.map((i) => i.keyword).lastIndexOf('FROM'));
  const one = (keyword: string) => stage.filter((i) => i.keyword === keyword).at(-1)?.args;
  const health = one('HEALTHCHECK');
  return {
    stage,
    one,
    workdir: one('WORKDIR'),
    env: Object.fromEntries(
      stage
        .filter((i) => i.keyword === 'ENV')
        .flatMap((i) => [...i.args.matchAll(/(\w+)=(\S+)/g)].map((m) => [m[1]!, m[2]!])),
    ),
    entrypoint: execForm(one('ENTRYPOINT')),
    cmd: execForm(one('CMD')),
    healthcheck: health === undefined ? undefined : execForm(health.slice(health.indexOf('CMD ') + 4)),
    exposed: (one('EXPOSE') ?? '')
      .split(/\s+/)
      .filter((p) => p !== '')
      .map(Number),
  };
}
