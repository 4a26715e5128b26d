/** Command-line flags of the bench tools, taken out of the argument list as they are read. */

/** The value after `name` (`--rounds 3`), removed with it from `args`; undefined when absent. */
export function takeFlag(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  if (i < 0) return undefined;
  const value = args[i + 1];
  args.splice(i, 2);
  return value;
}

/** Whether the switch `name` (`--skip-load`) is there, removed from `args`. */
export function takeSwitch(args: string[], name: string): boolean {
  const i = args.indexOf(name);
  if (i >= 0) args.splice(i, 1);
  return i >= 0;
}
