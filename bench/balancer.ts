/**
 * Measurement 3: the balancer alone. Time per pick with 10, 1 000 and 100 000 members of mixed
 * weights, against nginx's own algorithm (a scan of every member per pick) as the reference for
 * what "linear" looks like. Runs in its own process so the JIT state is its own; prints one JSON line.
 *
 *   bun bench/balancer.ts [--budget-ms 1500]
 */
import { parseArgs } from 'node:util'
import { Balancer } from '../src/fleet/balancer.ts'

const { values } = parseArgs({ options: { 'budget-ms': { type: 'string', default: '1500' } } })
const budgetMs = Number(values['budget-ms'])

export interface BalancerPoint {
  clients: number
  distinct_weights: number
  ns_per_pick: number
  /** A pick, then a retry pick excluding the member just picked (as after a failed attempt): ns per pair. */
  ns_per_pick_and_retry: number
  /** nginx's scan-every-member smooth WRR, for comparison. */
  reference_scan_ns_per_pick: number
  /** routing.balance "least_request": two random members, the less loaded wins (in flight read from the member's record, as the registry passes it). */
  least_request_ns_per_pick: number
}

/** Weights drawn from `choices` by a fixed pseudo-random sequence, so every run is the same. */
function weights(count: number, choices: readonly number[]): number[] {
  let state = 42
  return Array.from({ length: count }, () => {
    state = (state * 1103515245 + 12345) & 0x7fffffff
    return choices[(state >>> 8) % choices.length]!
  })
}

/** Runs `pick` in batches until `budget` ms pass; returns ns per call (after a warm-up batch). */
function timePerCall(pick: () => unknown, budget: number, batch: number): number {
  for (let i = 0; i < batch; i++) pick()
  let calls = 0
  const started = performance.now()
  let elapsed = 0
  while (elapsed < budget) {
    for (let i = 0; i < batch; i++) pick()
    calls += batch
    elapsed = performance.now() - started
  }
  return (elapsed * 1e6) / calls
}

/** nginx's ngx_http_upstream_get_peer: every member gains its weight, the richest pays the total. */
class ScanReference {
  private readonly current: number[]
  private readonly total: number
  constructor(private readonly weights: number[]) {
    this.current = weights.map(() => 0)
    this.total = weights.reduce((sum, weight) => sum + weight, 0)
  }
  pick(): number {
    let best = -1
    for (let i = 0; i < this.weights.length; i++) {
      this.current[i]! += this.weights[i]!
      if (best === -1 || this.current[i]! > this.current[best]!) best = i
    }
    this.current[best]! -= this.total
    return best
  }
}

const MIXED = [1, 2, 3, 5, 10]
/** The worst case for this design: pick compares the top of every distinct weight. */
const MANY_WEIGHTS = Array.from({ length: 100 }, (_, i) => i + 1)

const points: BalancerPoint[] = []
for (const [clients, choices] of [
  [10, MIXED],
  [1_000, MIXED],
  [100_000, MIXED],
  [100_000, MANY_WEIGHTS],
] as const) {
  const memberWeights = weights(clients, choices)
  const balancer = new Balancer<string>()
  // Each member carries its load (the registry passes the client record), as least-request reads it.
  for (const [i, weight] of memberWeights.entries()) balancer.set(`node-${i}`, weight, { inFlight: i % 7 })
  const reference = new ScanReference(memberWeights)
  points.push({
    clients,
    distinct_weights: new Set(memberWeights).size,
    ns_per_pick: Math.round(timePerCall(() => balancer.pick(), budgetMs, 10_000) * 10) / 10,
    ns_per_pick_and_retry: Math.round(timePerCall(() => balancer.pick(new Set([balancer.pick()!])), budgetMs / 2, 10_000) * 10) / 10,
    least_request_ns_per_pick: Math.round(timePerCall(() => balancer.pickLeastLoaded(Math.random), budgetMs, 10_000) * 10) / 10,
    reference_scan_ns_per_pick: Math.round(timePerCall(() => reference.pick(), budgetMs / 3, clients >= 100_000 ? 10 : 1000) * 10) / 10,
  })
}
console.log(`BALANCER_JSON ${JSON.stringify(points)}`)
