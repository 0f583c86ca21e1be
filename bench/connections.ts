/**
 * Measurement 4: idle WebSocket agents. Registers N agents (many sockets per agent process), then
 * reads the server's RSS: (RSS with N agents − RSS before) / N, and the time until all registered.
 * Then adds agents until the server's open-file limit (less some headroom) is reached.
 * Then, in `rounds` rounds (the order rotated each round), the same N agents on a fresh Moonlight,
 * on the Moonlight of `beforeRoot` if given, and on the floor: a bare Bun server that answers
 * `register` and subscribes each socket to one topic (agents/broadcast-floor.ts), measured the same way.
 */

import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { startMoonlight } from './lib/moonlight.ts'
import { type Child, loadAverage, rssBytes, spawnChild } from './lib/proc.ts'
import { median } from './lib/stats.ts'
import { spawnWsAgents } from './lib/ws-agents.ts'

export interface ConnectionsOptions {
  first: number
  /** Stop adding agents at this many, even if the machine allows more. */
  ceiling: number
  perProcess: number
  workDir: string
  log: (line: string) => void
  /** Another checkout's root (bench/run.ts --before): measured beside this one and the floor. */
  beforeRoot?: string
  /** Rounds of the comparison (this Moonlight, before, the floor); 0: none. */
  rounds?: number
}

/** One server's RSS per idle agent at `agents`, per round, in the comparison. */
export interface ConnectionsCompared {
  server: 'moonlight' | 'before' | 'floor'
  rss_per_agent_bytes: number[]
  median_bytes: number
}

export interface ConnectionStep {
  agents: number
  /** Wall time from starting the agent processes of this step until every one of them registered. */
  register_ms: number
  registrations_per_s: number
  server_rss_mb: number
  rss_per_agent_bytes: number
  load1: number
}

export interface ConnectionsResult {
  baseline_rss_mb: number
  /** What bounded the largest step: the server's open-file limit, or the ceiling asked for. */
  limit: string
  steps: ConnectionStep[]
  /** The commit measured as "before" (bench/run.ts --before). */
  before?: string
  /** The comparison at the first step's count of agents, servers interleaved. */
  compare?: { agents: number; rounds: number; servers: ConnectionsCompared[] }
}

const SETTLE_MS = 2000
/** Files the server needs besides agent sockets (listening socket, stdio, the runner's fetches). */
const FD_HEADROOM = 200

export async function runConnections(options: ConnectionsOptions): Promise<ConnectionsResult> {
  const { log } = options
  const agents: Child[] = []
  const moonlight = await startMoonlight(options.workDir, { name: 'moonlight-connections' })
  try {
    await Bun.sleep(SETTLE_MS)
    const baseline = rssBytes(moonlight.pid)
    const fileLimit = openFileLimit(moonlight.pid)
    const most = Math.min(options.ceiling, fileLimit - FD_HEADROOM)
    const limit = most === options.ceiling ? `ceiling of ${options.ceiling} asked for` : `server open-file limit (ulimit -n ${fileLimit})`
    const targets = [options.first, ...(most > options.first ? [most] : [])]
    const steps: ConnectionStep[] = []
    let connected = 0
    for (const target of targets) {
      const adding = target - connected
      const started = performance.now()
      const batch: Child[] = []
      for (let offset = 0; offset < adding; offset += options.perProcess) {
        const count = Math.min(options.perProcess, adding - offset)
        const agent = spawnWsAgents(`ws-agents-${connected + offset}`, moonlight.wsUrl, {
          count: count,
          region: 'idle-pool',
          prefix: `idle-${connected + offset}`,
        })
        batch.push(agent)
        agents.push(agent)
      }
      await Promise.all(batch.map((agent) => agent.waitFor(/registered \d+ in/, 120_000)))
      const registerMs = performance.now() - started
      connected = target
      await Bun.sleep(SETTLE_MS)
      const clients = await clientCount(moonlight.url)
      if (clients !== connected) throw new Error(`the server counts ${clients} clients, expected ${connected}`)
      const rss = rssBytes(moonlight.pid)
      const step: ConnectionStep = {
        agents: connected,
        register_ms: Math.round(registerMs),
        registrations_per_s: Math.round((adding * 1000) / registerMs),
        server_rss_mb: Math.round(rss / 1e5) / 10,
        rss_per_agent_bytes: Math.round((rss - baseline) / connected),
        load1: loadAverage(),
      }
      steps.push(step)
      log(
        `  ${connected} agents: registered in ${step.register_ms} ms, server RSS ${step.server_rss_mb} MB, ${step.rss_per_agent_bytes} B per agent, load ${step.load1}`,
      )
    }
    return { baseline_rss_mb: Math.round(baseline / 1e5) / 10, limit, steps }
  } finally {
    await Promise.all(agents.map((agent) => agent.stop()))
    await moonlight.stop()
  }
}

/** The comparison: each server started fresh, `first` agents registered, RSS per agent, the order rotated each round. */
export async function compareConnections(options: ConnectionsOptions): Promise<NonNullable<ConnectionsResult['compare']>> {
  const servers: ConnectionsCompared['server'][] = ['moonlight', ...(options.beforeRoot ? (['before'] as const) : []), 'floor']
  const measured = new Map(servers.map((server) => [server, [] as number[]]))
  const rounds = options.rounds ?? 1
  for (let round = 0; round < rounds; round++) {
    for (let at = 0; at < servers.length; at++) {
      const server = servers[(at + round) % servers.length]!
      const perAgent = await idleRss(server, options)
      measured.get(server)!.push(perAgent)
      options.log(`  round ${round + 1}, ${server}: ${options.first} agents, ${perAgent} B per agent`)
    }
  }
  return {
    agents: options.first,
    rounds,
    servers: servers.map((server) => ({ server, rss_per_agent_bytes: measured.get(server)!, median_bytes: Math.round(median(measured.get(server)!)) })),
  }
}

async function idleRss(server: ConnectionsCompared['server'], options: ConnectionsOptions): Promise<number> {
  const agents: Child[] = []
  let process: Child
  let wsUrl: string
  if (server === 'floor') {
    process = spawnChild('idle-floor', [globalThis.process.execPath, join(import.meta.dir, 'agents', 'broadcast-floor.ts'), '--port', '0'])
    const [, port] = await process.waitFor(/listening on (\d+)/, 10_000)
    wsUrl = `ws://127.0.0.1:${port}/ws`
  } else {
    const moonlight = await startMoonlight(options.workDir, { name: `moonlight-idle-${server}`, ...(server === 'before' ? { root: options.beforeRoot } : {}) })
    process = moonlight
    wsUrl = moonlight.wsUrl
  }
  try {
    await Bun.sleep(SETTLE_MS)
    const baseline = rssBytes(process.pid)
    for (let offset = 0; offset < options.first; offset += options.perProcess) {
      const count = Math.min(options.perProcess, options.first - offset)
      agents.push(spawnWsAgents(`ws-agents-${server}-${offset}`, wsUrl, { count, region: 'idle-pool', prefix: `idle-${offset}` }))
    }
    await Promise.all(agents.map((agent) => agent.waitFor(/registered \d+ in/, 120_000)))
    await Bun.sleep(SETTLE_MS)
    return Math.round((rssBytes(process.pid) - baseline) / options.first)
  } finally {
    await Promise.all(agents.map((agent) => agent.stop()))
    await process.stop()
  }
}

function openFileLimit(pid: number): number {
  const limits = readFileSync(`/proc/${pid}/limits`, 'utf8')
  const match = /Max open files\s+(\d+)/.exec(limits)
  return match ? Number(match[1]) : 1024
}

async function clientCount(url: string): Promise<number> {
  const status = (await (await fetch(`${url}/status`)).json()) as { clients: number }
  return status.clients
}
