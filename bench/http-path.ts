/**
 * Measurements 1 and 2: the same POST load through each path to the same trivial agent.
 * direct (the agent's own /work: the limit), nginx, HAProxy, Moonlight to an HTTP agent,
 * Moonlight to a WebSocket agent, and the text relay (the floor of a proxy on Bun). Rounds interleave the targets so drift hits all of them alike.
 */

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { startBunRelay, startMoonlightsWithAgent } from './lib/bench-processes.ts'
import { BENCH_TOKEN, waitForHttp } from './lib/moonlight.ts'
import { type Child, childPids, cpuTimeUs, freePort, loadAverage, mainThreadCpuUs, spawnChild } from './lib/proc.ts'
import { median, round } from './lib/stats.ts'
import { BODY, type WrkTarget, wrk } from './lib/wrk.ts'
import { spawnWsAgents } from './lib/ws-agents.ts'

/**
 * floor-text: the text relay (agents/text-relay.ts), the floor CPU per task is held to; floor-text-ws, its
 * WebSocket path (the WebSocket target's floor); floor-contract, the text relay doing what Moonlight's contract
 * asks of every task (TEXT_RELAY_CONTRACT=1: token, parsed body, payload cut out, the answer's headers), and
 * floor-contract-ws, the same on its WebSocket path (the agent's messages parsed too). Always measured.
 */
export const TARGETS = [
  'direct',
  'nginx',
  'haproxy',
  'moonlight-http',
  'moonlight-ws',
  'floor-text',
  'floor-text-ws',
  'floor-contract',
  'floor-contract-ws',
] as const
/** With `--before REF`: the same two Moonlight paths, from an older commit, in the same rounds. */
export const BEFORE_TARGETS = ['before-http', 'before-ws'] as const
/**
 * With `--floor`: a bare Bun relay (agents/bun-relay.ts), the least any proxy on Bun costs: calling
 * agents with fetch, with a bare socket pool, through Moonlight's own pool and through its
 * HttpTransport (each a step towards Moonlight), and over WebSocket.
 */
export const FLOOR_TARGETS = ['floor-http', 'floor-socket', 'floor-pool', 'floor-transport', 'floor-ws'] as const
export type Target = (typeof TARGETS)[number] | (typeof BEFORE_TARGETS)[number] | (typeof FLOOR_TARGETS)[number]

export interface HttpPathOptions {
  rounds: number
  durationS: number
  connections: number
  warmupS: number
  /**
   * Moonlight's paths (this checkout's and --before's) are warmed at least this long: its JIT still tiers up
   * and recompiles 5-10 s into load (bench/results/profile-2026-12-07.md), compile time the others do not carry.
   */
  moonlightWarmupS?: number
  workDir: string
  log: (line: string) => void
  /** Extra environment for the Moonlight process (e.g. to compare a setting). */
  moonlightEnv?: Record<string, string | undefined>
  /** A checkout of an older Moonlight to measure beside this one (before/after a fix). */
  beforeRoot?: string
  /** Also measure the bare Bun relay. */
  floor?: boolean
}

export interface WrkRun {
  target: Target
  round: number
  rps: number
  p50_us: number
  p90_us: number
  p99_us: number
  max_us: number
  requests: number
  errors: number
  /** CPU time (user + system, all threads) of the proxy per request; for direct, of the agent. */
  proxy_cpu_us_per_req: number
  /** The same for the proxy's main thread alone (all of nginx's, one thread per process). */
  proxy_main_cpu_us_per_req: number
  agent_cpu_us_per_req: number
  /** wrk's own CPU per request: with the proxy's and the agent's, what one task costs the whole box. */
  wrk_cpu_us_per_req: number
  load1: number
}

export interface TargetSummary {
  rps: number
  p50_us: number
  p99_us: number
  proxy_cpu_us_per_req: number
  proxy_main_cpu_us_per_req: number
  agent_cpu_us_per_req: number
  wrk_cpu_us_per_req: number
  errors: number
}

export interface HttpPathResult {
  settings: { rounds: number; duration_s: number; connections: number; wrk_threads: number; body: string }
  runs: WrkRun[]
  /** Medians over rounds. */
  summary: Partial<Record<Target, TargetSummary>>
  /** Medians over rounds of the per-round ratios (each round's targets ran back to back). */
  ratios: {
    http_rps_vs_nginx: number
    http_p99_vs_nginx: number
    ws_rps_vs_nginx: number
    http_rps_vs_direct: number
    http_rps_vs_haproxy: number
    /** Proxy CPU per task over nginx's: steadier than req/s when other work shares the box. */
    http_cpu_vs_nginx: number
    ws_cpu_vs_nginx: number
    /** Moonlight's HTTP path's proxy CPU per task over the text relay's: what Moonlight's own work costs. */
    http_cpu_vs_floor_text: number
    /** The floors the throughput targets are held against, in the same rounds. */
    floor_text_rps_vs_nginx: number
    floor_text_ws_rps_vs_nginx: number
    floor_contract_rps_vs_nginx: number
    floor_contract_cpu_vs_floor_text: number
    floor_contract_ws_rps_vs_nginx: number
    /** Moonlight's WebSocket path's CPU per task over the contract floor's on that path. */
    ws_cpu_vs_floor_contract_ws: number
    before_http_rps_vs_nginx?: number
    before_http_p99_vs_nginx?: number
    before_ws_rps_vs_nginx?: number
    floor_http_rps_vs_nginx?: number
    floor_socket_rps_vs_nginx?: number
    floor_socket_p99_vs_nginx?: number
    floor_pool_rps_vs_nginx?: number
    floor_transport_rps_vs_nginx?: number
    http_rps_vs_floor_socket?: number
    floor_ws_rps_vs_nginx?: number
  }
  /** The commit measured as "before", if any. */
  before?: string
}

export const HTTP_REGION = 'us-east-1'
export const WS_REGION = 'eu-west-1'

export interface Endpoint extends WrkTarget {
  /** Processes whose CPU counts as the proxy's. */
  proxyPids: () => number[]
}

export async function runHttpPath(options: HttpPathOptions): Promise<HttpPathResult> {
  const { log, workDir } = options
  const children: Child[] = []
  try {
    const { moonlight, before, agent, agentPort } = await startMoonlightsWithAgent(
      workDir,
      children,
      'moonlight-http-path',
      HTTP_REGION,
      { env: options.moonlightEnv },
      options.beforeRoot,
    )
    const wsAgent = startWsAgent(moonlight.wsUrl)
    children.push(wsAgent)
    await wsAgent.waitFor(/registered 1 in/)
    const beforeWsAgent = before ? startWsAgent(before.wsUrl) : undefined
    if (beforeWsAgent) {
      children.push(beforeWsAgent)
      await beforeWsAgent.waitFor(/registered 1 in/)
    }

    const nginx = startNginx(workDir, agentPort)
    children.push(nginx.child)
    const haproxy = startHaproxy(workDir, agentPort)
    children.push(haproxy.child)
    await Promise.all([waitForHttp(nginx.url), waitForHttp(haproxy.url)])
    const { child: textRelay, url: textRelayUrl } = await startBunRelay(agentPort, WS_REGION, 'text')
    children.push(textRelay)
    const textWsAgent = startWsAgent(`${textRelayUrl.replace(/^http/, 'ws')}/ws`)
    children.push(textWsAgent)
    await textWsAgent.waitFor(/registered 1 in/)
    const { child: contractRelay, url: contractRelayUrl } = await startBunRelay(agentPort, WS_REGION, 'text', [], { TEXT_RELAY_CONTRACT: '1' })
    children.push(contractRelay)
    const contractWsAgent = startWsAgent(`${contractRelayUrl.replace(/^http/, 'ws')}/ws`)
    children.push(contractWsAgent)
    await contractWsAgent.waitFor(/registered 1 in/)

    const endpoints: Partial<Record<Target, Endpoint>> = {
      direct: { url: `http://127.0.0.1:${agentPort}/work`, body: BODY(HTTP_REGION), proxyPids: () => [agent.pid] },
      nginx: { url: `${nginx.url}/task/request`, body: BODY(HTTP_REGION), proxyPids: () => [nginx.child.pid, ...childPids(nginx.child.pid)] },
      haproxy: { url: `${haproxy.url}/task/request`, body: BODY(HTTP_REGION), proxyPids: () => [haproxy.child.pid] },
      'moonlight-http': { url: `${moonlight.url}/task/request`, body: BODY(HTTP_REGION), proxyPids: () => [moonlight.pid] },
      'moonlight-ws': { url: `${moonlight.url}/task/request`, body: BODY(WS_REGION), proxyPids: () => [moonlight.pid] },
      'floor-text': { url: `${textRelayUrl}/task/request`, body: BODY(HTTP_REGION), proxyPids: () => [textRelay.pid] },
      'floor-text-ws': { url: `${textRelayUrl}/task/request`, body: BODY(WS_REGION), proxyPids: () => [textRelay.pid] },
      'floor-contract': { url: `${contractRelayUrl}/task/request`, body: BODY(HTTP_REGION), proxyPids: () => [contractRelay.pid] },
      'floor-contract-ws': { url: `${contractRelayUrl}/task/request`, body: BODY(WS_REGION), proxyPids: () => [contractRelay.pid] },
    }
    const agentPids: Partial<Record<Target, number[]>> = {
      direct: [agent.pid],
      nginx: [agent.pid],
      haproxy: [agent.pid],
      'moonlight-http': [agent.pid],
      'moonlight-ws': [wsAgent.pid],
      'floor-text': [agent.pid],
      'floor-text-ws': [textWsAgent.pid],
      'floor-contract': [agent.pid],
      'floor-contract-ws': [contractWsAgent.pid],
    }
    if (before && beforeWsAgent) {
      endpoints['before-http'] = { url: `${before.url}/task/request`, body: BODY(HTTP_REGION), proxyPids: () => [before.pid] }
      endpoints['before-ws'] = { url: `${before.url}/task/request`, body: BODY(WS_REGION), proxyPids: () => [before.pid] }
      agentPids['before-http'] = [agent.pid]
      agentPids['before-ws'] = [beforeWsAgent.pid]
    }
    if (options.floor) {
      const { child: relay, url: relayUrl } = await startBunRelay(agentPort, WS_REGION, 'fetch')
      children.push(relay)
      const relayWsAgent = startWsAgent(`${relayUrl.replace(/^http/, 'ws')}/ws`)
      children.push(relayWsAgent)
      await relayWsAgent.waitFor(/registered 1 in/)
      endpoints['floor-http'] = { url: `${relayUrl}/task/request`, body: BODY(HTTP_REGION), proxyPids: () => [relay.pid] }
      const { child: socketRelay, url: socketRelayUrl } = await startBunRelay(agentPort, WS_REGION, 'socket')
      children.push(socketRelay)
      endpoints['floor-socket'] = { url: `${socketRelayUrl}/task/request`, body: BODY(HTTP_REGION), proxyPids: () => [socketRelay.pid] }
      agentPids['floor-socket'] = [agent.pid]
      for (const client of ['pool', 'transport'] as const) {
        const { child: ownRelay, url: ownRelayUrl } = await startBunRelay(agentPort, WS_REGION, client)
        children.push(ownRelay)
        endpoints[`floor-${client}`] = { url: `${ownRelayUrl}/task/request`, body: BODY(HTTP_REGION), proxyPids: () => [ownRelay.pid] }
        agentPids[`floor-${client}`] = [agent.pid]
      }
      endpoints['floor-ws'] = { url: `${relayUrl}/task/request`, body: BODY(WS_REGION), proxyPids: () => [relay.pid] }
      agentPids['floor-http'] = [agent.pid]
      agentPids['floor-ws'] = [relayWsAgent.pid]
    }
    const targets = Object.keys(endpoints) as Target[]
    await checkAnswers(endpoints)

    for (const target of targets) {
      log(`  warm-up ${target}`)
      await wrk(endpoints[target]!, options.connections, warmupFor(target, options))
    }
    const runs: WrkRun[] = []
    for (let roundNo = 1; roundNo <= options.rounds; roundNo++) {
      // Rotate the order each round: whoever runs first or last does not always get the same box.
      const order = targets.map((_, i) => targets[(i + roundNo - 1) % targets.length]!)
      for (const target of order) {
        const endpoint = endpoints[target]!
        const proxyPids = endpoint.proxyPids()
        const load1 = loadAverage()
        const proxyCpuBefore = sumCpu(proxyPids)
        const proxyMainBefore = sumMainThreadCpu(proxyPids)
        const agentCpuBefore = sumCpu(agentPids[target]!)
        const result = await wrk(endpoint, options.connections, options.durationS)
        const proxyCpu = sumCpu(proxyPids) - proxyCpuBefore
        const proxyMainCpu = sumMainThreadCpu(proxyPids) - proxyMainBefore
        const agentCpu = sumCpu(agentPids[target]!) - agentCpuBefore
        const run: WrkRun = {
          target,
          round: roundNo,
          rps: round1(result.requests / (result.duration_us / 1e6)),
          p50_us: result.p50_us,
          p90_us: result.p90_us,
          p99_us: result.p99_us,
          max_us: result.max_us,
          requests: result.requests,
          errors: result.connect_errors + result.read_errors + result.write_errors + result.non_2xx + result.timeouts,
          proxy_cpu_us_per_req: round(proxyCpu / result.requests),
          proxy_main_cpu_us_per_req: round(proxyMainCpu / result.requests),
          agent_cpu_us_per_req: round(agentCpu / result.requests),
          wrk_cpu_us_per_req: round(result.cpu_us / result.requests),
          load1,
        }
        runs.push(run)
        log(
          `  round ${roundNo} ${target.padEnd(15)} ${run.rps.toFixed(0).padStart(7)} req/s  p50 ${ms(run.p50_us)}  p99 ${ms(run.p99_us)}  proxy CPU ${run.proxy_cpu_us_per_req} µs/req (main thread ${run.proxy_main_cpu_us_per_req})  wrk ${run.wrk_cpu_us_per_req}  errors ${run.errors}  load ${load1}`,
        )
      }
    }
    return {
      settings: { rounds: options.rounds, duration_s: options.durationS, connections: options.connections, wrk_threads: 1, body: BODY(HTTP_REGION) },
      runs,
      summary: summarize(runs, targets),
      ratios: ratios(runs, options.rounds, targets),
    }
  } finally {
    await Promise.all(children.reverse().map((child) => child.stop()))
  }
}

/** Every path must answer 200 before it is timed: a fast stream of 401s or 503s measures nothing. */
export async function checkAnswers(endpoints: Partial<Record<string, Endpoint>>): Promise<void> {
  for (const [target, endpoint] of Object.entries(endpoints) as Array<[string, Endpoint]>) {
    const response = await fetch(endpoint.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${BENCH_TOKEN}` },
      body: endpoint.body,
    })
    const text = await response.text()
    if (response.status !== 200 || !text.includes('"ok":true')) throw new Error(`${target} answered ${response.status}: ${text}`)
  }
}

export function startNginx(workDir: string, agentPort: number): { child: Child; url: string } {
  const dir = join(workDir, 'nginx')
  mkdirSync(dir, { recursive: true })
  const port = freePort()
  const config = fill(readFileSync(join(import.meta.dir, 'proxies', 'nginx.conf'), 'utf8'), { DIR: dir, PORT: port, AGENT_PORT: agentPort })
  const configPath = join(dir, 'nginx.conf')
  writeFileSync(configPath, config)
  const child = spawnChild('nginx', ['nginx', '-p', dir, '-e', join(dir, 'nginx-error.log'), '-c', configPath])
  return { child, url: `http://127.0.0.1:${port}` }
}

function startHaproxy(workDir: string, agentPort: number): { child: Child; url: string } {
  const port = freePort()
  const configPath = join(workDir, 'haproxy.cfg')
  writeFileSync(configPath, fill(readFileSync(join(import.meta.dir, 'proxies', 'haproxy.cfg'), 'utf8'), { PORT: port, AGENT_PORT: agentPort }))
  // -db: stay in the foreground so the runner owns the process and can stop it.
  const child = spawnChild('haproxy', ['haproxy', '-db', '-f', configPath])
  return { child, url: `http://127.0.0.1:${port}` }
}

function fill(template: string, values: Record<string, string | number>): string {
  return template.replace(/\{\{(\w+)\}\}/g, (_, key: string) => {
    if (!(key in values)) throw new Error(`no value for {{${key}}}`)
    return String(values[key])
  })
}

export function sumMainThreadCpu(pids: readonly number[]): number {
  let total = 0
  for (const pid of pids) total += mainThreadCpuUs(pid)
  return total
}

export function sumCpu(pids: readonly number[]): number {
  let total = 0
  for (const pid of pids) total += cpuTimeUs(pid)
  return total
}

export function startWsAgent(wsUrl: string): Child {
  return spawnWsAgents('ws-agent', wsUrl, { count: 1, region: WS_REGION })
}

function summarize(runs: readonly WrkRun[], targets: readonly Target[]): Partial<Record<Target, TargetSummary>> {
  const summary: Partial<Record<Target, TargetSummary>> = {}
  for (const target of targets) {
    const mine = runs.filter((run) => run.target === target)
    summary[target] = {
      rps: round1(median(mine.map((run) => run.rps))),
      p50_us: median(mine.map((run) => run.p50_us)),
      p99_us: median(mine.map((run) => run.p99_us)),
      proxy_cpu_us_per_req: round(median(mine.map((run) => run.proxy_cpu_us_per_req))),
      proxy_main_cpu_us_per_req: round(median(mine.map((run) => run.proxy_main_cpu_us_per_req))),
      agent_cpu_us_per_req: round(median(mine.map((run) => run.agent_cpu_us_per_req))),
      wrk_cpu_us_per_req: round(median(mine.map((run) => run.wrk_cpu_us_per_req))),
      errors: mine.reduce((sum, run) => sum + run.errors, 0),
    }
  }
  return summary
}

function ratios(runs: readonly WrkRun[], rounds: number, targets: readonly Target[]): HttpPathResult['ratios'] {
  const perRound = (f: (get: (target: Target) => WrkRun) => number) => {
    const values: number[] = []
    for (let roundNo = 1; roundNo <= rounds; roundNo++) {
      const get = (target: Target) => runs.find((run) => run.round === roundNo && run.target === target)!
      values.push(f(get))
    }
    return round3(median(values))
  }
  return {
    http_rps_vs_nginx: perRound((get) => get('moonlight-http').rps / get('nginx').rps),
    http_p99_vs_nginx: perRound((get) => get('moonlight-http').p99_us / get('nginx').p99_us),
    ws_rps_vs_nginx: perRound((get) => get('moonlight-ws').rps / get('nginx').rps),
    http_rps_vs_direct: perRound((get) => get('moonlight-http').rps / get('direct').rps),
    http_rps_vs_haproxy: perRound((get) => get('moonlight-http').rps / get('haproxy').rps),
    http_cpu_vs_nginx: perRound((get) => get('moonlight-http').proxy_cpu_us_per_req / get('nginx').proxy_cpu_us_per_req),
    ws_cpu_vs_nginx: perRound((get) => get('moonlight-ws').proxy_cpu_us_per_req / get('nginx').proxy_cpu_us_per_req),
    http_cpu_vs_floor_text: perRound((get) => get('moonlight-http').proxy_cpu_us_per_req / get('floor-text').proxy_cpu_us_per_req),
    floor_text_rps_vs_nginx: perRound((get) => get('floor-text').rps / get('nginx').rps),
    floor_text_ws_rps_vs_nginx: perRound((get) => get('floor-text-ws').rps / get('nginx').rps),
    floor_contract_rps_vs_nginx: perRound((get) => get('floor-contract').rps / get('nginx').rps),
    floor_contract_cpu_vs_floor_text: perRound((get) => get('floor-contract').proxy_cpu_us_per_req / get('floor-text').proxy_cpu_us_per_req),
    floor_contract_ws_rps_vs_nginx: perRound((get) => get('floor-contract-ws').rps / get('nginx').rps),
    ws_cpu_vs_floor_contract_ws: perRound((get) => get('moonlight-ws').proxy_cpu_us_per_req / get('floor-contract-ws').proxy_cpu_us_per_req),
    ...(targets.includes('before-http')
      ? {
          before_http_rps_vs_nginx: perRound((get) => get('before-http').rps / get('nginx').rps),
          before_http_p99_vs_nginx: perRound((get) => get('before-http').p99_us / get('nginx').p99_us),
          before_ws_rps_vs_nginx: perRound((get) => get('before-ws').rps / get('nginx').rps),
        }
      : {}),
    ...(targets.includes('floor-http')
      ? {
          floor_http_rps_vs_nginx: perRound((get) => get('floor-http').rps / get('nginx').rps),
          floor_socket_rps_vs_nginx: perRound((get) => get('floor-socket').rps / get('nginx').rps),
          floor_socket_p99_vs_nginx: perRound((get) => get('floor-socket').p99_us / get('nginx').p99_us),
          floor_pool_rps_vs_nginx: perRound((get) => get('floor-pool').rps / get('nginx').rps),
          floor_transport_rps_vs_nginx: perRound((get) => get('floor-transport').rps / get('nginx').rps),
          http_rps_vs_floor_socket: perRound((get) => get('moonlight-http').rps / get('floor-socket').rps),
          floor_ws_rps_vs_nginx: perRound((get) => get('floor-ws').rps / get('nginx').rps),
        }
      : {}),
  }
}

const round1 = (value: number) => round(value, 1)
const round3 = (value: number) => round(value, 3)
const ms = (us: number) => `${(us / 1000).toFixed(2)} ms`

/** How long `target` is warmed before the rounds: Moonlight's paths longer (see moonlightWarmupS). */
function warmupFor(target: string, options: { warmupS: number; moonlightWarmupS?: number }): number {
  const moonlight = target.startsWith('moonlight') || target.startsWith('before')
  return moonlight ? Math.max(options.warmupS, options.moonlightWarmupS ?? 0) : options.warmupS
}
