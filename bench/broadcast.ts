/**
 * Measurement 5: one task broadcast to every WebSocket agent of a region (1 000 by default):
 * the time from sending POST /task/request with "mode":"broadcast" until the answer holding
 * every agent's result is in, and the CPU the server spent on it (its main thread, and all its
 * threads). The agents run in AGENT_PROCESSES processes: on two cores one process answering all
 * 1 000 in turn is the slowest part of the run, and its time is not the server's.
 */

import { join } from 'node:path'
import { BENCH_TOKEN, startMoonlight } from './lib/moonlight.ts'
import { type Child, cpuTimeUs, loadAverage, mainThreadCpuUs, spawnChild } from './lib/proc.ts'
import { median, round } from './lib/stats.ts'
import { spawnWsAgents } from './lib/ws-agents.ts'

export interface BroadcastOptions {
  agents: number
  repeats: number
  workDir: string
  log: (line: string) => void
}

export interface BroadcastResult {
  agents: number
  repeats: number
  median_ms: number
  min_ms: number
  max_ms: number
  /** Every broadcast's time, in order. */
  times_ms: number[]
  /** The server's CPU per broadcast, over all the timed ones: its main thread (JavaScript and its sockets), and all its threads. */
  server_main_cpu_ms: number
  server_cpu_ms: number
  agent_processes: number
  /** The same broadcasts through a bare Bun server (agents/broadcast-floor.ts): the platform's floor, in the same run. */
  floor?: { median_ms: number; server_main_cpu_ms: number; server_cpu_ms: number }
  load1: number
}

const REGION = 'ap-southeast-1'
const WARM_UP = 3
const AGENT_PROCESSES = 4

export async function runBroadcast(options: BroadcastOptions): Promise<BroadcastResult> {
  const moonlight = await startMoonlight(options.workDir, { name: 'moonlight-broadcast' })
  let measured: Measured
  try {
    const body = JSON.stringify({ region: REGION, mode: 'broadcast', payload: { job: 'refresh-cache', key: 'config' } })
    measured = await measure(options, moonlight.pid, moonlight.wsUrl, 'moonlight', () =>
      fetch(`${moonlight.url}/task/request`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${BENCH_TOKEN}` },
        body,
      }),
    )
  } finally {
    await moonlight.stop()
  }
  const floorServer = spawnChild('broadcast-floor', [process.execPath, join(import.meta.dir, 'agents', 'broadcast-floor.ts'), '--port', '0'])
  let floor: Measured
  try {
    const [, port] = await floorServer.waitFor(/listening on (\d+)/, 10_000)
    floor = await measure(options, floorServer.pid, `ws://127.0.0.1:${port}/ws`, 'floor', () => fetch(`http://127.0.0.1:${port}/broadcast`, { method: 'POST' }))
  } finally {
    await floorServer.stop()
  }
  const result: BroadcastResult = {
    agents: options.agents,
    repeats: options.repeats,
    median_ms: round(median(measured.times), 2),
    min_ms: Math.min(...measured.times),
    max_ms: Math.max(...measured.times),
    times_ms: measured.times,
    server_main_cpu_ms: round(median(measured.mainCpu), 2),
    server_cpu_ms: round(median(measured.allCpu), 2),
    agent_processes: measured.agentProcesses,
    floor: { median_ms: round(median(floor.times), 2), server_main_cpu_ms: round(median(floor.mainCpu), 2), server_cpu_ms: round(median(floor.allCpu), 2) },
    load1: loadAverage(),
  }
  options.log(
    `  broadcast to ${options.agents} agents: median ${result.median_ms} ms (min ${result.min_ms}, max ${result.max_ms}); server CPU ${result.server_main_cpu_ms} ms main thread, ${result.server_cpu_ms} ms all; the bare floor ${result.floor?.median_ms} ms, ${result.floor?.server_main_cpu_ms} ms main thread; load ${result.load1}`,
  )
  return result
}

interface Measured {
  times: number[]
  mainCpu: number[]
  allCpu: number[]
  agentProcesses: number
}

/** Registers the agents at `wsUrl` in AGENT_PROCESSES processes, then times `broadcast` and the server's CPU for each. */
async function measure(options: BroadcastOptions, serverPid: number, wsUrl: string, name: string, broadcast: () => Promise<Response>): Promise<Measured> {
  const agents: Child[] = []
  try {
    const perProcess = Math.ceil(options.agents / AGENT_PROCESSES)
    for (let at = 0; at < options.agents; at += perProcess) {
      const count = Math.min(perProcess, options.agents - at)
      agents.push(spawnWsAgents(`${name}-agents-${at}`, wsUrl, { count, region: REGION, prefix: `bcast${at}-` }))
    }
    await Promise.all(agents.map((child) => child.waitFor(/registered \d+ in/, 60_000)))
    const measured: Measured = { times: [], mainCpu: [], allCpu: [], agentProcesses: agents.length }
    // /proc counts CPU in 10 ms ticks, as long as a broadcast: the CPU is read over all the timed ones, then divided.
    let mainBefore = 0
    let allBefore = 0
    for (let i = 0; i < WARM_UP + options.repeats; i++) {
      if (i === WARM_UP) [mainBefore, allBefore] = [mainThreadCpuUs(serverPid), cpuTimeUs(serverPid)]
      const started = performance.now()
      const response = await broadcast()
      const answer = (await response.json()) as { answered?: number; targets?: number }
      const elapsed = performance.now() - started
      if (response.status !== 200 || answer.answered !== options.agents) {
        throw new Error(`${name}: broadcast answered ${response.status} with ${answer.answered}/${answer.targets} answers, expected ${options.agents}`)
      }
      if (i >= WARM_UP) measured.times.push(round(elapsed, 2))
    }
    measured.mainCpu.push((mainThreadCpuUs(serverPid) - mainBefore) / 1000 / options.repeats)
    measured.allCpu.push((cpuTimeUs(serverPid) - allBefore) / 1000 / options.repeats)
    return measured
  } finally {
    await Promise.all(agents.map((child) => child.stop()))
  }
}
