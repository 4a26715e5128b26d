/**
 * Times as ISO 8601 (`2026-12-07T10:15:30.120Z`, what `Date#toISOString` writes) for the registry
 * API's answers, which carry three per instance. V8 formats every date through a printf-style
 * formatter, a tenth of a renewal's cost; here the part up to the second is formatted once per
 * second and kept in a few slots (a renewal's times fall in a few seconds: now, now + TTL).
 */

const SLOTS = 8;
const seconds = new Float64Array(SLOTS).fill(Number.NaN);
const prefixes = new Array<string>(SLOTS).fill('');
/** Date#toISOString's plain form covers years 0000-9999; outside it, the extended form is left to it. */
const MAX_PLAIN_MS = 253_402_300_800_000;

export function isoTime(ms: number): string {
  if (!(ms >= 0 && ms < MAX_PLAIN_MS) || !Number.isInteger(ms)) return new Date(ms).toISOString();
  const second = Math.floor(ms / 1000);
  const slot = second % SLOTS;
  if (seconds[slot] !== second) {
    // "YYYY-MM-DDTHH:MM:SS."
    prefixes[slot] = new Date(second * 1000).toISOString().slice(0, 20);
    seconds[slot] = second;
  }
  const milli = ms - second * 1000;
  return `${prefixes[slot]}${milli < 10 ? '00' : milli < 100 ? '0' : ''}${milli}Z`;
}
