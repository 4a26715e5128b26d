/**
 * CLI entry: `peregrine run | validate | schema | healthcheck | register | certs`. Static config is
 * read once here; the gateway reloads the dynamic part itself on file change and on SIGHUP.
 */
import { parseArgs } from 'node:util';
import { runHealthcheck } from './cli/healthcheck.ts';
import { REGISTER_USAGE, runRegister } from './cli/register.ts';
import { runSchema } from './cli/schema.ts';
import { runValidate } from './cli/validate.ts';
import { ConfigError, formatIssue, loadConfigFile } from './config/loader.ts';
import { Gateway } from './gateway.ts';
import { VERSION } from './version.ts';

const USAGE = `peregrine ${VERSION}

Usage:
  peregrine run [--config <file>]   start the gateway (default $PEREGRINE_CONFIG, else config/gateway.yaml)
  peregrine validate <file>         check a config file; exit 0 when valid, 2 with every error
  peregrine schema                  print the JSON Schema of the config file
  peregrine healthcheck [--config <file>]
                                    exit 0 when the gateway of that config answers /healthz on its
                                    admin address, 1 otherwise (container health checks)
  peregrine register --service <name> --port <port> --registry <url> [options]
                                    keep an instance registered until SIGTERM (--help for options)
  peregrine certs init|issue [options]
                                    a development CA and SPIFFE certificates for a mesh (--help)
  peregrine --version
`;

/** The config file of `run` and `healthcheck` when none is given. */
function defaultConfigFile(): string {
  return process.env.PEREGRINE_CONFIG || 'config/gateway.yaml';
}

const out = {
  stdout: (s: string) => process.stdout.write(s.endsWith('\n') ? s : `${s}\n`),
  stderr: (s: string) => process.stderr.write(s.endsWith('\n') ? s : `${s}\n`),
};

/**
 * Node's lenient HTTP parser (`--insecure-http-parser`) accepts the malformed framing that request
 * smuggling relies on. The gateway refuses to run with it, whatever set it.
 */
function lenientParserRequested(execArgv: readonly string[], nodeOptions: string | undefined): boolean {
  const flags = [...execArgv, ...(nodeOptions ?? '').split(/\s+/)];
  return flags.includes('--insecure-http-parser');
}

async function run(configFile: string): Promise<void> {
  if (lenientParserRequested(process.execArgv, process.env.NODE_OPTIONS)) {
    out.stderr('peregrine: refusing to start with --insecure-http-parser (request smuggling risk)');
    process.exit(2);
  }
  let config: Awaited<ReturnType<typeof loadConfigFile>>;
  try {
    config = await loadConfigFile(configFile);
  } catch (err) {
    if (err instanceof ConfigError) {
      for (const issue of err.issues) out.stderr(formatIssue(issue));
      process.exit(2);
    }
    throw err;
  }
  let gateway: Gateway;
  try {
    gateway = await Gateway.start({ config, configFile });
  } catch (err) {
    // A port in use, an unreadable certificate, ...: one clear line, not a stack trace.
    const code = (err as { code?: string }).code;
    out.stderr(
      `peregrine: cannot start: ${err instanceof Error ? err.message : String(err)}${code ? ` (${code})` : ''}`,
    );
    process.exit(1);
  }
  const log = gateway.telemetry.logger;

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutdown requested');
    gateway.shutdown().then(
      () => process.exit(0),
      (err: unknown) => {
        log.fatal({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => {
    gateway.reloadCertificates('signal');
    void gateway.reload('signal');
  });
  // Either of these is a bug in the gateway: log it loudly and exit so the orchestrator restarts us.
  process.on('unhandledRejection', (reason) => {
    log.fatal({ err: reason }, 'unhandled promise rejection');
    process.exitCode = 1;
    stop('unhandledRejection');
  });
  process.on('uncaughtException', (err) => {
    log.fatal({ err }, 'uncaught exception');
    process.exitCode = 1;
    stop('uncaughtException');
  });
}

async function main(argv: string[]): Promise<number | undefined> {
  // `register` has options of its own.
  if (argv[0] === 'register') {
    if (argv.includes('--help') || argv.includes('-h')) {
      out.stdout(REGISTER_USAGE);
      return 0;
    }
    return runRegister(argv.slice(1), out);
  }
  // `certs` too; loaded on demand, so the gateway never loads its certificate builder.
  if (argv[0] === 'certs') {
    const { runCerts } = await import('./cli/certs.ts');
    return runCerts(argv.slice(1), out);
  }
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      config: { type: 'string', short: 'c' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean', short: 'v' },
    },
  });
  if (values.version) {
    out.stdout(VERSION);
    return 0;
  }
  const [command = 'run', ...rest] = positionals;
  if (values.help || command === 'help') {
    out.stdout(USAGE);
    return 0;
  }
  switch (command) {
    case 'run':
      await run(values.config ?? rest[0] ?? defaultConfigFile());
      return undefined;
    case 'healthcheck':
      return runHealthcheck(values.config ?? rest[0] ?? defaultConfigFile(), out);
    case 'validate': {
      const file = rest[0] ?? values.config;
      if (!file) {
        out.stderr('usage: peregrine validate <file>');
        return 2;
      }
      return runValidate(file, out);
    }
    case 'schema':
      return runSchema(out);
    default:
      out.stderr(`unknown command ${JSON.stringify(command)}\n\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== undefined) process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`peregrine: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
