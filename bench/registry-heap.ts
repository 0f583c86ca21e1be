/**
 * What the registry alone holds per client (its record, its entry in the registry's map, its places
 * in the balancers of its region's chain), in JS heap bytes and cells by type: deterministic (cells
 * reachable after full collections, no timing), so it needs no quiet machine. `root` is a checkout
 * to measure instead of this one (e.g. a `git worktree` of the commit before a change).
 *
 *   bun bench/registry-heap.ts [region=us-east-1] [clients=20000] [root=.]
 */
import { heapStats } from 'bun:jsc'
import { join } from 'node:path'

const region = process.argv[2] ?? 'us-east-1'
const N = Number(process.argv[3] ?? 20_000)
const root = process.argv[4] ?? join(import.meta.dir, '..')
const { Registry } = await import(join(root, 'src/fleet/registry.ts'))
const { Regions } = await import(join(root, 'src/fleet/regions.ts'))
const { SEED_HIERARCHY } = await import(join(root, 'src/config/config.ts'))

const read = () => {
  Bun.gc(true)
  Bun.gc(true)
  const stats = heapStats()
  return { bytes: stats.heapSize, counts: stats.objectTypeCounts as Record<string, number> }
}
const policy = { failuresToEject: 5, ejectionMs: 30_000, maxEjectionMs: 300_000, maxEjectedPercent: 50, slowStartMs: 0 }
const registry = new Registry(new Regions(SEED_HIERARCHY), policy)
// Each as a register brings it: parsed from its own message (JSON.parse shares short strings, as it does there).
const hellos = Array.from({ length: N }, (_, i) => JSON.parse(`{"node_id":"idle-0-${i}","region":"${region}","holder":"${'x'.repeat(44)}","ip":"127.0.0.1"}`))
const before = read()
for (const hello of hellos) {
  registry.announce({ holder: hello.holder, nodeId: hello.node_id, region: hello.region, protocol: 'ws', ip: hello.ip, port: 0, weight: 1 }, Date.now())
}
// The hellos' strings stay (a client keeps its node id); their objects go.
for (let i = 0; i < N; i++) hellos[i] = hellos[i].node_id
const after = read()
console.log(
  `registry, ${N} clients in ${region} (chain ${new Regions(SEED_HIERARCHY).chain(region).length}): ${((after.bytes - before.bytes) / N).toFixed(0)} B of JS heap per client`,
)
for (const [type, count] of Object.entries(after.counts)) {
  const perClient = (count - (before.counts[type] ?? 0)) / N
  if (Math.abs(perClient) >= 0.05) console.log(`  ${perClient.toFixed(2).padStart(6)}  ${type}`)
}
// Keeps the registry alive up to here, and checks it works.
if (registry.size !== N || registry.pick(region) === undefined) throw new Error('the registry lost its clients')
