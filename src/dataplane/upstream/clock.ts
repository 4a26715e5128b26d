/**
 * Milliseconds on a monotonic clock. Every time-dependent part of the upstream layer takes one, so
 * tests drive time directly instead of sleeping.
 */
export type Clock = () => number;

export const monotonicClock: Clock = performance.now.bind(performance);

/** Uniform in [0, 1). Injectable for deterministic tests and simulations. */
export type Random = () => number;
