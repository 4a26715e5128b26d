/**
 * Schema fields shared by every config section: durations and byte sizes written as strings
 * (`"2s"`, `"16KiB"`) and parsed once, at validation; addresses, names and CIDRs. A module of its own so section schemas can
 * use them without importing the top-level schema (which imports them).
 */
import { z } from 'zod';
import { parseDuration, parseSize } from './duration.ts';

export const duration = (fallback: string) =>
  z
    .union([z.string(), z.number()])
    .default(fallback)
    .transform((v, ctx) => {
      const ms = parseDuration(v);
      if (ms === undefined) {
        ctx.addIssue({
          code: 'custom',
          message: `invalid duration ${JSON.stringify(v)} (use e.g. 500ms, 2s, 1m)`,
        });
        return z.NEVER;
      }
      return ms;
    })
    .meta({ description: `Duration such as 500ms, 2s, 1m (default ${fallback})` });

export const size = (fallback: string) =>
  z
    .union([z.string(), z.number()])
    .default(fallback)
    .transform((v, ctx) => {
      const bytes = parseSize(v);
      if (bytes === undefined) {
        ctx.addIssue({ code: 'custom', message: `invalid size ${JSON.stringify(v)} (use e.g. 16KiB, 10MB)` });
        return z.NEVER;
      }
      return bytes;
    })
    .meta({ description: `Byte size such as 16KiB or 10MB (default ${fallback})` });

/** A plain object (not null, not an array): what cross-checks of unvalidated input look for. */
export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** host:port; host may be an IPv4 address, a name, or a bracketed IPv6 address. */
export const address = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'expected host:port, e.g. 0.0.0.0:8080')
  // Only judge the port of an address the regex accepted; otherwise both messages would show.
  .refine((a) => {
    const port = /:(\d{1,5})$/.exec(a);
    return !port || Number(port[1]) <= 65535;
  }, 'port out of range');

export const name = z
  .string()
  .regex(/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/, 'names use letters, digits, _ . - (at most 63 characters)');

export const cidr = z
  .string()
  .regex(/^[0-9a-fA-F:.]+(\/\d{1,3})?$/, 'expected an IP address or CIDR, e.g. 10.0.0.0/8');
