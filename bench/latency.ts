/**
 * The latency phase: what one task waits for and costs when the proxy is not saturated. Two modes,
 * each through every path in turn, the order rotated each round so drift hits all alike:
 * - `one`: one connection, requests back to back (`wrk -t1 -c1`);
 * - `rate`: a fixed moderate rate, paced on a schedule over a few connections (bench/wrk/post.lua).
 * Paths: direct (the agent itself), nginx, the bare socket relay (bun-relay.ts --client socket: parses
 * the body), the text relay (text-relay.ts: passes it through, the floor) on its HTTP and WebSocket
 * paths, Moonlight's HTTP and WebSocket paths, and with --before an older Moonlight's.
 * For each: p50/p99/p99.9, the p50 added over direct, the proxy's CPU per task (the process, and its
 * main thread alone) and, for the Bun processes, what the heap probe (lib/heap-probe.ts) reads.
 */
import { checkAnswers, type Endpoint, HTTP_REGION, startNginx, startWsAgent, sumCpu, sumMainThreadCpu, WS_REGION } from './http-path.ts'
import { startBunRelay, startMoonlightsWithAgent } from './lib/bench-processes.ts'
import { HEAP_PROBE_ARGS, type HeapPerTask, heapPerTask, heapProbePort, readHeap } from './lib/heap-readings.ts'
import { waitForHttp } from './lib/moonlight.ts'
import { type Child, childPids, loadAverage } from './lib/proc.ts'
import { median, round } from './lib/stats.ts'
import { BODY, wrk } from './lib/wrk.ts'

export const LATENCY_TARGETS = ['direct', 'nginx', 'floor-socket', 'floor-text', 'floor-text-ws', 'moonlight-http', 'moonlight-ws'] as const
export const LATENCY_BEFORE_TARGETS = ['before-http', 'before-ws'] as const
export type LatencyTarget = (typeof LATENCY_TARGETS)[number] | (typeof LATENCY_BEFORE_TARGETS)[number]
export const LATENCY_MODES = ['one', 'rate'] as const
export type LatencyMode = (typeof LATENCY_MODES)[number]

export interface LatencyOptions {
  rounds: number
  durationS: number
  warmupS: number
  /**
   * Moonlight's paths (this checkout's and --before's) are warmed at least this long: its JIT still tiers up
   * and recompiles 5-10 s into load (bench/results/profile-2026-12-07.md), compile time the others do not carry.
   */
  moonlightWarmupS?: number
  /** The `rate` mode's requests per second, over `rateConnections` connections. */
  ratePerS: number
  rateConnections: number
  workDir: string
  log: (line: string) => void
  /** A checkout of an older Moonlight to measure beside this one. */
  beforeRoot?: string
}

export interface LatencyRun {
  mode: LatencyMode
  target: LatencyTarget
  round: number
  rps: number
  p50_us: number
  p99_us: number
  p999_us: number
  max_us: number
  requests: number
  errors: number
  proxy_cpu_us_per_task: number
  proxy_main_cpu_us_per_task: number
  /** Bun proxies only (the heap probe). */
  heap?: HeapPerTask
  load1: number
}

/** Medians over rounds; the ratios are medians of per-round ratios (each round's paths ran back to back). */
export interface LatencyRow {
  rps: number
  p50_us: number
  p99_us: number
  p999_us: number
  /** p50 over direct's p50 in the same round. */
  added_us: number
  /** Its added latency over nginx's. */
  added_vs_nginx: number
  /** p99 and CPU per task over the text relay's on the same kind of path (HTTP or WebSocket). */
  p99_vs_floor: number
  proxy_cpu_us_per_task: number
  proxy_main_cpu_us_per_task: number
  cpu_vs_floor: number
  heap?: HeapPerTask
  errors: number
}

export interface LatencyResult {
  settings: { rounds: number; duration_s: number; rate_per_s: number; rate_connections: number; body: string }
  runs: LatencyRun[]
  summary: Record<LatencyMode, Partial<Record<LatencyTarget, LatencyRow>>>
  /** The commit measured as "before", if any. */
  before?: string
}

interface ProbedEndpoint extends Endpoint {
  /** The heap probe's side port, for Bun processes. */
  probePort?: number
}

/** The text relay's path a target is held to: its WebSocket path for the WebSocket paths. */
export function floorOf(target: LatencyTarget): LatencyTarget {
  return target === 'moonlight-ws' || target === 'before-ws' || target === 'floor-text-ws' ? 'floor-text-ws' : 'floor-text'
}

export async function runLatency(options: LatencyOptions): Promise<LatencyResult> {
  const { log, workDir } = options
  const children: Child[] = []
  try {
    const { moonlight, before, agent, agentPort } = await startMoonlightsWithAgent(
      workDir,
      children,
      'moonlight-latency',
      HTTP_REGION,
      { bunArgs: HEAP_PROBE_ARGS },
      options.beforeRoot,
    )
    const nginx = startNginx(workDir, agentPort)
    children.push(nginx.child)
    const socketRelay = await startBunRelay(agentPort, WS_REGION, 'socket', HEAP_PROBE_ARGS)
    children.push(socketRelay.child)
    const textRelay = await startBunRelay(agentPort, WS_REGION, 'text', HEAP_PROBE_ARGS)
    children.push(textRelay.child)
    const wsAgents = [moonlight.wsUrl, `${textRelay.url.replace(/^http/, 'ws')}/ws`, ...(before ? [before.wsUrl] : [])].map(startWsAgent)
    children.push(...wsAgents)
    await Promise.all([waitForHttp(nginx.url), ...wsAgents.map((wsAgent) => wsAgent.waitFor(/registered 1 in/))])

    const [moonlightProbe, socketProbe, textProbe, beforeProbe] = await Promise.all([
      heapProbePort(moonlight),
      heapProbePort(socketRelay.child),
      heapProbePort(textRelay.child),
      before ? heapProbePort(before) : undefined,
    ])
    const task = (url: string, region: string) => ({ url: `${url}/task/request`, body: BODY(region) })
    const endpoints: Partial<Record<LatencyTarget, ProbedEndpoint>> = {
      direct: { url: `http://127.0.0.1:${agentPort}/work`, body: BODY(HTTP_REGION), proxyPids: () => [agent.pid] },
      nginx: { ...task(nginx.url, HTTP_REGION), proxyPids: () => [nginx.child.pid, ...childPids(nginx.child.pid)] },
      'floor-socket': { ...task(socketRelay.url, HTTP_REGION), proxyPids: () => [socketRelay.child.pid], probePort: socketProbe },
      'floor-text': { ...task(textRelay.url, HTTP_REGION), proxyPids: () => [textRelay.child.pid], probePort: textProbe },
      'floor-text-ws': { ...task(textRelay.url, WS_REGION), proxyPids: () => [textRelay.child.pid], probePort: textProbe },
      'moonlight-http': { ...task(moonlight.url, HTTP_REGION), proxyPids: () => [moonlight.pid], probePort: moonlightProbe },
      'moonlight-ws': { ...task(moonlight.url, WS_REGION), proxyPids: () => [moonlight.pid], probePort: moonlightProbe },
    }
    if (before) {
      endpoints['before-http'] = { ...task(before.url, HTTP_REGION), proxyPids: () => [before.pid], probePort: beforeProbe }
      endpoints['before-ws'] = { ...task(before.url, WS_REGION), proxyPids: () => [before.pid], probePort: beforeProbe }
    }
    const targets = Object.keys(endpoints) as LatencyTarget[]
    await checkAnswers(endpoints)

    const load = (mode: LatencyMode, endpoint: ProbedEndpoint, durationS: number) =>
      mode === 'one' ? wrk(endpoint, 1, durationS) : wrk(endpoint, options.rateConnections, durationS, options.ratePerS)
    for (const target of targets) {
      log(`  warm-up ${target}`)
      await load('one', endpoints[target]!, warmupFor(target, options))
    }
    const runs: LatencyRun[] = []
    for (let roundNo = 1; roundNo <= options.rounds; roundNo++) {
      for (const mode of LATENCY_MODES) {
        const order = targets.map((_, i) => targets[(i + roundNo - 1) % targets.length]!)
        for (const target of order) {
          const endpoint = endpoints[target]!
          const pids = endpoint.proxyPids()
          const heapStart = endpoint.probePort === undefined ? undefined : await readHeap(endpoint.probePort)
          const load1 = loadAverage()
          const cpuBefore = sumCpu(pids)
          const mainBefore = sumMainThreadCpu(pids)
          const result = await load(mode, endpoint, options.durationS)
          const cpu = sumCpu(pids) - cpuBefore
          const mainCpu = sumMainThreadCpu(pids) - mainBefore
          const heapEnd = endpoint.probePort === undefined ? undefined : await readHeap(endpoint.probePort)
          const run: LatencyRun = {
            mode,
            target,
            round: roundNo,
            rps: round(result.requests / (result.duration_us / 1e6), 1),
            p50_us: result.p50_us,
            p99_us: result.p99_us,
            p999_us: result.p999_us,
            max_us: result.max_us,
            requests: result.requests,
            errors: result.connect_errors + result.read_errors + result.write_errors + result.non_2xx + result.timeouts,
            proxy_cpu_us_per_task: round(cpu / result.requests),
            proxy_main_cpu_us_per_task: round(mainCpu / result.requests),
            ...(heapStart && heapEnd ? { heap: roundHeap(heapPerTask(heapStart, heapEnd, result.requests)) } : {}),
            load1,
          }
          runs.push(run)
          log(
            `  round ${roundNo} ${mode.padEnd(4)} ${target.padEnd(15)} ${run.rps.toFixed(0).padStart(6)} req/s  p50 ${run.p50_us} µs  p99 ${run.p99_us}  p99.9 ${run.p999_us}  CPU ${run.proxy_cpu_us_per_task} µs/task (main ${run.proxy_main_cpu_us_per_task})${run.heap ? `  GCs/1000 ${run.heap.collections_per_1000}  native ${run.heap.native_bytes} B/task` : ''}  errors ${run.errors}  load ${load1}`,
          )
        }
      }
    }
    return {
      settings: {
        rounds: options.rounds,
        duration_s: options.durationS,
        rate_per_s: options.ratePerS,
        rate_connections: options.rateConnections,
        body: BODY(HTTP_REGION),
      },
      runs,
      summary: { one: summarize(runs, 'one', targets, options.rounds), rate: summarize(runs, 'rate', targets, options.rounds) },
    }
  } finally {
    await Promise.all(children.reverse().map((child) => child.stop()))
  }
}

function summarize(
  allRuns: readonly LatencyRun[],
  mode: LatencyMode,
  targets: readonly LatencyTarget[],
  rounds: number,
): Partial<Record<LatencyTarget, LatencyRow>> {
  const runs = allRuns.filter((run) => run.mode === mode)
  /** The median over rounds of `f`, given each round's runs. */
  const perRound = (f: (get: (target: LatencyTarget) => LatencyRun) => number) => {
    const values: number[] = []
    for (let roundNo = 1; roundNo <= rounds; roundNo++) {
      const get = (target: LatencyTarget) => runs.find((run) => run.round === roundNo && run.target === target)!
      values.push(f(get))
    }
    return median(values)
  }
  const summary: Partial<Record<LatencyTarget, LatencyRow>> = {}
  for (const target of targets) {
    const mine = runs.filter((run) => run.target === target)
    const of = (pick: (run: LatencyRun) => number) => median(mine.map(pick))
    const added = (get: (target: LatencyTarget) => LatencyRun, which: LatencyTarget) => get(which).p50_us - get('direct').p50_us
    const heaps = mine.flatMap((run) => (run.heap ? [run.heap] : []))
    summary[target] = {
      rps: round(
        of((run) => run.rps),
        1,
      ),
      p50_us: of((run) => run.p50_us),
      p99_us: of((run) => run.p99_us),
      p999_us: of((run) => run.p999_us),
      added_us: perRound((get) => added(get, target)),
      added_vs_nginx: round(
        perRound((get) => added(get, target) / added(get, 'nginx')),
        3,
      ),
      p99_vs_floor: round(
        perRound((get) => get(target).p99_us / get(floorOf(target)).p99_us),
        3,
      ),
      proxy_cpu_us_per_task: round(of((run) => run.proxy_cpu_us_per_task)),
      proxy_main_cpu_us_per_task: round(of((run) => run.proxy_main_cpu_us_per_task)),
      cpu_vs_floor: round(
        perRound((get) => get(target).proxy_cpu_us_per_task / get(floorOf(target)).proxy_cpu_us_per_task),
        3,
      ),
      ...(heaps.length > 0
        ? {
            heap: roundHeap({
              collections_per_1000: median(heaps.map((heap) => heap.collections_per_1000)),
              native_bytes: median(heaps.map((heap) => heap.native_bytes)),
              native_allocations: median(heaps.map((heap) => heap.native_allocations)),
              retained_bytes: median(heaps.map((heap) => heap.retained_bytes)),
              retained_objects: median(heaps.map((heap) => heap.retained_objects)),
            }),
          }
        : {}),
      errors: mine.reduce((sum, run) => sum + run.errors, 0),
    }
  }
  return summary
}

function roundHeap(heap: HeapPerTask): HeapPerTask {
  return {
    collections_per_1000: round(heap.collections_per_1000),
    native_bytes: Math.round(heap.native_bytes),
    native_allocations: round(heap.native_allocations),
    retained_bytes: round(heap.retained_bytes),
    retained_objects: round(heap.retained_objects, 3),
  }
}

/** How long `target` is warmed before the rounds: Moonlight's paths longer (see moonlightWarmupS). */
function warmupFor(target: string, options: { warmupS: number; moonlightWarmupS?: number }): number {
  const moonlight = target.startsWith('moonlight') || target.startsWith('before')
  return moonlight ? Math.max(options.warmupS, options.moonlightWarmupS ?? 0) : options.warmupS
}
