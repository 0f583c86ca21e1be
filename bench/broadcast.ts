/**
 * Measurement 5: one task broadcast to every WebSocket agent of a region (1 000 by default):
 * the time from sending POST /task/request with "mode":"broadcast" until the answer holding
 * every agent's result is in, and the CPU the server spent on it (its main thread, and all its
 * threads). The agents run in AGENT_PROCESSES processes: on two cores one process answering all
 * 1 000 in turn is the slowest part of the run, and its time is not the server's.
 *
 * Beside Moonlight, in the same run and with agents of their own: a bare Bun server doing only the
 * broadcast (agents/broadcast-floor.ts, the floor) and, with `beforeRoot`, Moonlight at another
 * commit (the A/B). All servers and their agents are up together; the rounds interleave them, the
 * order rotated each round, so a busy moment of the shared box falls on each alike.
 */

import { join } from 'node:path'
import { BENCH_TOKEN, startMoonlight } from './lib/moonlight.ts'
import { type Child, loadAverage, spawnChild, threadCpu } from './lib/proc.ts'
import { median, round } from './lib/stats.ts'
import { spawnWsAgents } from './lib/ws-agents.ts'

export interface BroadcastOptions {
  agents: number
  /** Timed broadcasts per server per round. */
  repeats: number
  /** Rounds over the servers (default 1). */
  rounds?: number
  workDir: string
  log: (line: string) => void
  /** Another checkout's root: its Moonlight is measured too, interleaved (bench/run.ts --before). */
  beforeRoot?: string
}

/** One server's figures: the median over every timed broadcast, and CPU per broadcast as a median over rounds. */
export interface BroadcastServerResult {
  median_ms: number
  server_main_cpu_ms: number
  server_cpu_ms: number
  /** CPU per broadcast by thread name (main, JITWorker, HeapHelper…), medians over rounds. */
  threads_ms?: Record<string, number>
}

export interface BroadcastResult {
  agents: number
  repeats: number
  rounds?: number
  median_ms: number
  min_ms: number
  max_ms: number
  /** Every broadcast's time, in order. */
  times_ms: number[]
  /** The server's CPU per broadcast, over all the timed ones: its main thread (JavaScript and its sockets), and all its threads. */
  server_main_cpu_ms: number
  server_cpu_ms: number
  threads_ms?: Record<string, number>
  agent_processes: number
  /** The same broadcasts through a bare Bun server (agents/broadcast-floor.ts): the platform's floor, in the same run. */
  floor?: BroadcastServerResult
  /** Moonlight at the --before commit, in the same rounds. */
  before?: BroadcastServerResult
  /** The --before commit, when there is one. */
  before_ref?: string
  load1: number
}

const REGION = 'ap-southeast-1'
/** Broadcasts before the first timed one, per server: long enough for the JIT to have compiled the per-answer path. */
const WARM_UP = 20
const AGENT_PROCESSES = 4

interface Server {
  name: string
  child: Child
  agents: Child[]
  broadcast: () => Promise<Response>
  times: number[]
  mainCpu: number[]
  allCpu: number[]
  threads: Map<string, number[]>
}

export async function runBroadcast(options: BroadcastOptions): Promise<BroadcastResult> {
  const rounds = options.rounds ?? 1
  const servers: Server[] = []
  try {
    servers.push(await moonlightServer(options, 'moonlight'))
    if (options.beforeRoot) servers.push(await moonlightServer(options, 'moonlight-before', options.beforeRoot))
    const floorChild = spawnChild('broadcast-floor', [process.execPath, join(import.meta.dir, 'agents', 'broadcast-floor.ts'), '--port', '0'])
    const floor: Server = {
      name: 'floor',
      child: floorChild,
      agents: [],
      broadcast: () => Promise.reject(new Error('not started')),
      times: [],
      mainCpu: [],
      allCpu: [],
      threads: new Map(),
    }
    servers.push(floor)
    const [, port] = await floorChild.waitFor(/listening on (\d+)/, 10_000)
    floor.broadcast = () => fetch(`http://127.0.0.1:${port}/broadcast`, { method: 'POST' })
    for (const server of servers) {
      const wsUrl = server.name === 'floor' ? `ws://127.0.0.1:${port}/ws` : undefined
      await startAgents(options, server, wsUrl)
    }
    for (const server of servers) for (let i = 0; i < WARM_UP; i++) await timeOne(options, server)
    for (let r = 0; r < rounds; r++) {
      const order = servers.map((_, i) => servers[(i + r) % servers.length]!)
      for (const server of order) {
        const before = threadCpu(server.child.pid)
        for (let i = 0; i < options.repeats; i++) server.times.push(round(await timeOne(options, server), 2))
        const after = threadCpu(server.child.pid)
        // /proc counts CPU in 10 ms ticks, about one broadcast: read over all of a round's, then divided.
        for (const [name, us] of after) {
          if (name.includes(':')) continue
          const perBroadcast = (us - (before.get(name) ?? 0)) / 1000 / options.repeats
          const list = server.threads.get(name) ?? []
          list.push(perBroadcast)
          server.threads.set(name, list)
        }
        server.mainCpu.push(server.threads.get('main')!.at(-1)!)
        server.allCpu.push([...server.threads.values()].reduce((sum, list) => sum + (list.length === server.mainCpu.length ? list.at(-1)! : 0), 0))
      }
    }
  } finally {
    await Promise.all(servers.flatMap((server) => [...server.agents, server.child]).map((child) => child.stop()))
  }
  const summary = (server: Server): BroadcastServerResult => {
    const threads: Record<string, number> = {}
    for (const [name, list] of server.threads) {
      const value = round(median(list), 2)
      if (value > 0) threads[name] = value
    }
    return {
      median_ms: round(median(server.times), 2),
      server_main_cpu_ms: round(median(server.mainCpu), 2),
      server_cpu_ms: round(median(server.allCpu), 2),
      threads_ms: threads,
    }
  }
  const [now, ...others] = servers
  const main = summary(now!)
  const floorServer = others.find((server) => server.name === 'floor')
  const beforeServer = others.find((server) => server.name === 'moonlight-before')
  const result: BroadcastResult = {
    agents: options.agents,
    repeats: options.repeats,
    rounds,
    ...main,
    min_ms: Math.min(...now!.times),
    max_ms: Math.max(...now!.times),
    times_ms: now!.times,
    agent_processes: now!.agents.length,
    floor: floorServer && summary(floorServer),
    before: beforeServer && summary(beforeServer),
    load1: loadAverage(),
  }
  const line = (name: string, server: BroadcastServerResult) =>
    `  ${name}: median ${server.median_ms} ms; server CPU ${server.server_main_cpu_ms} ms main thread, ${server.server_cpu_ms} ms all (${Object.entries(
      server.threads_ms ?? {},
    )
      .map(([thread, ms]) => `${thread} ${ms}`)
      .join(', ')})`
  options.log(`  broadcast to ${options.agents} agents, ${rounds} round(s) × ${options.repeats}; load ${result.load1}`)
  options.log(line('moonlight', main))
  if (result.before) options.log(line('moonlight before', result.before))
  if (result.floor) options.log(line('bare floor', result.floor))
  return result
}

async function moonlightServer(options: BroadcastOptions, name: string, root?: string): Promise<Server> {
  const moonlight = await startMoonlight(options.workDir, { name, root })
  const body = JSON.stringify({ region: REGION, mode: 'broadcast', payload: { job: 'refresh-cache', key: 'config' } })
  return {
    name,
    child: moonlight,
    agents: [],
    broadcast: () =>
      fetch(`${moonlight.url}/task/request`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${BENCH_TOKEN}` },
        body,
      }),
    times: [],
    mainCpu: [],
    allCpu: [],
    threads: new Map(),
  }
}

/** Registers the agents of `server` in AGENT_PROCESSES processes. */
async function startAgents(options: BroadcastOptions, server: Server, wsUrl?: string): Promise<void> {
  const url = wsUrl ?? (server.child as Child & { wsUrl: string }).wsUrl
  const perProcess = Math.ceil(options.agents / AGENT_PROCESSES)
  for (let at = 0; at < options.agents; at += perProcess) {
    const count = Math.min(perProcess, options.agents - at)
    server.agents.push(spawnWsAgents(`${server.name}-agents-${at}`, url, { count, region: REGION, prefix: `bcast${at}-` }))
  }
  await Promise.all(server.agents.map((child) => child.waitFor(/registered \d+ in/, 60_000)))
}

/** One broadcast through `server`, checked to have every agent's answer: its time in ms. */
async function timeOne(options: BroadcastOptions, server: Server): Promise<number> {
  const started = performance.now()
  const response = await server.broadcast()
  const answer = (await response.json()) as { answered?: number; targets?: number }
  const elapsed = performance.now() - started
  if (response.status !== 200 || answer.answered !== options.agents) {
    throw new Error(`${server.name}: broadcast answered ${response.status} with ${answer.answered}/${answer.targets} answers, expected ${options.agents}`)
  }
  return elapsed
}
