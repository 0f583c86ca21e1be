/**
 * Measurement 4: idle WebSocket agents. Registers N agents (many sockets per agent process), then
 * reads the server's RSS: (RSS with N agents − RSS before) / N, and the time until all registered.
 * Then adds agents until the server's open-file limit (less some headroom) is reached.
 */

import { readFileSync } from 'node:fs'
import { startMoonlight } from './lib/moonlight.ts'
import { type Child, loadAverage, rssBytes } from './lib/proc.ts'
import { spawnWsAgents } from './lib/ws-agents.ts'

export interface ConnectionsOptions {
  first: number
  /** Stop adding agents at this many, even if the machine allows more. */
  ceiling: number
  perProcess: number
  workDir: string
  log: (line: string) => void
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

function openFileLimit(pid: number): number {
  const limits = readFileSync(`/proc/${pid}/limits`, 'utf8')
  const match = /Max open files\s+(\d+)/.exec(limits)
  return match ? Number(match[1]) : 1024
}

async function clientCount(url: string): Promise<number> {
  const status = (await (await fetch(`${url}/status`)).json()) as { clients: number }
  return status.clients
}
