/**
 * Slow start (HAProxy's `slowstart`, Envoy's slow start): a client that joins, or comes back from an
 * ejection, gets a share that ramps linearly from 10 % to 100 % of its weight over `slowStartMs`,
 * so a cold agent (empty caches, a JIT not warmed up) is not handed its full share at once.
 *
 * The ramp moves in steps of 5 %: the balancer stays exact between steps (it is smooth weighted
 * round-robin over the weights in force) and a ramping client adds at most 19 distinct weights to
 * the balancer's scan, however many clients ramp at once. Pure: time comes in as numbers.
 */

/** Where a ramp starts: a tenth of the weight, so the client gets some traffic to warm up on. */
export const RAMP_START_FACTOR = 0.1
/** The factor moves in twentieths (5 %). */
const RAMP_STEPS = 20

/** The share of its weight a client gets `elapsedMs` into its ramp: 0.1 at the start, 1 at the end, in 5 % steps. */
export function rampFactor(elapsedMs: number, slowStartMs: number): number {
  if (!(slowStartMs > 0) || elapsedMs >= slowStartMs) return 1
  const linear = RAMP_START_FACTOR + (1 - RAMP_START_FACTOR) * (Math.max(0, elapsedMs) / slowStartMs)
  // Floor to the step below, so the client never gets more than the linear ramp allows.
  return Math.max(RAMP_START_FACTOR, Math.floor(linear * RAMP_STEPS) / RAMP_STEPS)
}

/** A client's weight as the balancer uses it: its weight times its ramp factor. */
export function effectiveWeight(weight: number, factor: number): number {
  return factor === 1 ? weight : weight * factor
}
