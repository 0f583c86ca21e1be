/**
 * Runs the whole benchmark suite and writes bench/results/<name>.json and .md (and latest.*).
 * Every phase is bounded; the whole run gives up (killing what it started) past --budget-s.
 *
 *   bun bench/run.ts [--quick] [--rounds 3] [--duration 8] [--connections 64]
 *                    [--only http,latency,balancer,connections,broadcast,fetch-cap,cluster] [--label NAME]
 *                    [--latency-rate 2000] [--latency-connections 4]   (the latency phase's paced mode)
 *                    [--idle-agents 10000] [--idle-rounds 1]   (idle agents: how many; rounds beside --before and the floor)
 *                    [--before GIT_REF]   (also measure Moonlight at that commit, for before/after)
 *                    [--floor]            (also measure a bare Bun relay: the platform's floor)
 * Needs wrk, nginx, haproxy and redis-server on PATH: bench/run.sh installs them (apt-get) first.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import type { BalancerPoint } from './balancer.ts'
import { runBroadcast } from './broadcast.ts'
import { runCluster } from './cluster.ts'
import { compareConnections, runConnections } from './connections.ts'
import type { FetchCapPoint } from './fetch-cap.ts'
import { runHttpPath } from './http-path.ts'
import { LATENCY_BEFORE_TARGETS, LATENCY_TARGETS, runLatency } from './latency.ts'
import { checkoutAt } from './lib/checkout.ts'
import { describeMachine } from './lib/machine.ts'
import { killAll, spawnChild } from './lib/proc.ts'
import { type BenchResults, checkTargets, toMarkdown } from './lib/report.ts'

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    rounds: { type: 'string' },
    duration: { type: 'string' },
    connections: { type: 'string', default: '64' },
    only: { type: 'string', default: 'http,latency,balancer,connections,broadcast,fetch-cap,cluster' },
    'latency-rate': { type: 'string', default: '2000' },
    'latency-connections': { type: 'string', default: '4' },
    'idle-agents': { type: 'string', default: '10000' },
    'idle-ceiling': { type: 'string', default: '60000' },
    /** Rounds of the idle agents' comparison (this tree, --before, the floor): each round starts every server afresh. */
    'idle-rounds': { type: 'string', default: '1' },
    'broadcast-agents': { type: 'string', default: '1000' },
    label: { type: 'string' },
    before: { type: 'string' },
    floor: { type: 'boolean', default: false },
    'budget-s': { type: 'string', default: '900' },
  },
})

const phases = new Set(values.only.split(','))
const rounds = Number(values.rounds ?? (values.quick ? 1 : 6))
const durationS = Number(values.duration ?? (values.quick ? 3 : 5))
/** Moonlight's JIT settles 10 s or so into load (bench/results/profile-2026-12-07.md): its paths are warmed this long. */
const MOONLIGHT_WARMUP_S = 12
const resultsDir = join(import.meta.dir, 'results')
const workDir = mkdtempSync(join(tmpdir(), 'moonlight-bench-'))
const log = (line: string) => console.log(line)

function giveUp(reason: string): never {
  console.error(`bench: ${reason}; stopping everything it started`)
  killAll()
  process.exit(1)
}
const watchdog = setTimeout(() => giveUp(`over the time budget of ${values['budget-s']} s`), Number(values['budget-s']) * 1000)
process.on('SIGINT', () => giveUp('interrupted'))
process.on('SIGTERM', () => giveUp('terminated'))

const tools: Record<string, string[]> = { http: ['wrk', 'nginx', 'haproxy'], latency: ['wrk', 'nginx'], cluster: ['wrk', 'redis-server'] }
for (const [phase, needed] of Object.entries(tools)) {
  for (const tool of needed) {
    if (phases.has(phase) && !Bun.which(tool, { PATH: `${process.env.PATH}:/usr/sbin:/sbin` }))
      giveUp(`${tool} is not installed: run bench/run.sh, which installs it`)
  }
}
process.env.PATH = `${process.env.PATH}:/usr/sbin:/sbin`

const startedAt = new Date()
const started = performance.now()
const results: Omit<BenchResults, 'targets'> = { started_at: startedAt.toISOString(), duration_s: 0, machine: describeMachine() }
log(`bench: ${results.machine.cpu}, ${results.machine.cores} cores; Bun ${results.machine.bun}; work dir ${workDir}`)

const beforeRoot = values.before ? checkoutOrGiveUp(values.before) : undefined

function checkoutOrGiveUp(ref: string): string {
  try {
    return checkoutAt(ref, join(workDir, 'before'))
  } catch (error) {
    giveUp((error as Error).message)
  }
}
try {
  if (phases.has('http')) {
    log(`\n[1-2] task path: ${rounds} rounds × 6 paths × ${durationS} s, ${values.connections} connections`)
    results.http = await runHttpPath({
      rounds,
      durationS,
      connections: Number(values.connections),
      warmupS: values.quick ? 1 : 2,
      moonlightWarmupS: values.quick ? 1 : MOONLIGHT_WARMUP_S,
      workDir,
      log,
      beforeRoot,
      floor: values.floor,
    })
    if (values.before) results.http.before = values.before
  }
  if (phases.has('latency')) {
    // Twice the paths of the http phase (two modes): fewer, shorter runs by default keep the suite bounded.
    const latencyRounds = Number(values.rounds ?? (values.quick ? 1 : 4))
    const latencyDurationS = Number(values.duration ?? (values.quick ? 2 : 3))
    const paths = LATENCY_TARGETS.length + (beforeRoot ? LATENCY_BEFORE_TARGETS.length : 0)
    log(
      `\n[latency] ${latencyRounds} rounds × 2 modes (1 connection; ${values['latency-rate']} req/s over ${values['latency-connections']}) × ${paths} paths × ${latencyDurationS} s`,
    )
    results.latency = await runLatency({
      rounds: latencyRounds,
      durationS: latencyDurationS,
      warmupS: values.quick ? 1 : 2,
      moonlightWarmupS: values.quick ? 1 : MOONLIGHT_WARMUP_S,
      ratePerS: Number(values['latency-rate']),
      rateConnections: Number(values['latency-connections']),
      workDir,
      log,
      beforeRoot,
    })
    if (values.before) results.latency.before = values.before
  }
  if (phases.has('balancer')) {
    log('\n[3] balancer')
    results.balancer = await runBalancer(values.quick ? 300 : 1500)
    for (const point of results.balancer)
      log(`  ${point.clients} clients, ${point.distinct_weights} weights: ${point.ns_per_pick} ns/pick (scan: ${point.reference_scan_ns_per_pick} ns)`)
  }
  if (phases.has('connections')) {
    log('\n[4] idle WebSocket agents')
    results.connections = await runConnections({
      first: Number(values['idle-agents']),
      ceiling: values.quick ? Number(values['idle-agents']) : Number(values['idle-ceiling']),
      perProcess: 5000,
      workDir,
      log,
    })
    const compare = {
      first: Number(values['idle-agents']),
      ceiling: Number(values['idle-agents']),
      perProcess: 5000,
      workDir,
      log,
      beforeRoot,
      rounds: Number(values['idle-rounds']),
    }
    log(`  beside ${beforeRoot ? `${values.before} and ` : ''}the floor (a bare Bun server, one topic per socket), ${compare.rounds} round(s):`)
    results.connections.compare = await compareConnections(compare)
    if (values.before) results.connections.before = values.before
  }
  if (phases.has('broadcast')) {
    log('\n[5] broadcast')
    results.broadcast = await runBroadcast({
      agents: Number(values['broadcast-agents']),
      repeats: values.quick ? 3 : 10,
      // Each round is a few hundred ms per server: three by default, however few the other phases run.
      rounds: Number(values.rounds ?? 3),
      workDir,
      log,
      beforeRoot,
    })
    if (values.before) results.broadcast.before_ref = values.before
  }
  if (phases.has('fetch-cap')) {
    log('\n[6] fetch cap: one task to a fast agent while 300 wait on a slow one')
    results.fetch_cap = await runFetchCap()
    for (const point of results.fetch_cap) log(`  BUN_CONFIG_MAX_HTTP_REQUESTS ${point.bun_config_max_http_requests}: ${point.fast_task_ms} ms`)
  }
  if (phases.has('cluster')) {
    log(
      `\n[7] cluster: ${rounds} rounds × ${beforeRoot ? 5 : 4} paths × ${durationS} s, ${values.connections} connections; Redis relay vs local, two instances vs one`,
    )
    results.cluster = await runCluster({
      rounds,
      durationS,
      connections: Number(values.connections),
      warmupS: values.quick ? 1 : 2,
      workDir,
      log,
      beforeRoot,
    })
  }
} catch (error) {
  console.error(error)
  giveUp('a phase failed')
}
clearTimeout(watchdog)
results.duration_s = Math.round((performance.now() - started) / 1000)
const final: BenchResults = { ...results, targets: checkTargets(results) }
const name = values.label ?? startedAt.toISOString().replace(/[:.]/g, '-').slice(0, 19)
mkdirSync(resultsDir, { recursive: true })
const markdown = toMarkdown(final)
for (const base of [name, 'latest']) {
  writeFileSync(join(resultsDir, `${base}.json`), `${JSON.stringify(final, null, 2)}\n`)
  writeFileSync(join(resultsDir, `${base}.md`), `${markdown}\n`)
}
rmSync(workDir, { recursive: true, force: true })
log(`\n${markdown}`)
log(`bench: wrote bench/results/${name}.json and .md (and latest.*) in ${final.duration_s} s`)

/** The sources at `ref`, unpacked beside the work dir, sharing this checkout's node_modules. */
async function runFetchCap(): Promise<FetchCapPoint[]> {
  // The measuring process sends 301 requests at once itself: its own limit must not be the one measured.
  const child = spawnChild('fetch-cap', [process.execPath, join(import.meta.dir, 'fetch-cap.ts')], { BUN_CONFIG_MAX_HTTP_REQUESTS: '4096' })
  const [, json] = await child.waitFor(/FETCH_CAP_JSON (.+)\n/, 60_000)
  await child.process.exited
  return JSON.parse(json!) as FetchCapPoint[]
}

async function runBalancer(budgetMs: number): Promise<BalancerPoint[]> {
  const child = spawnChild('balancer', [process.execPath, join(import.meta.dir, 'balancer.ts'), '--budget-ms', String(budgetMs)])
  const [, json] = await child.waitFor(/BALANCER_JSON (.+)\n/, 120_000)
  await child.process.exited
  return JSON.parse(json!) as BalancerPoint[]
}
