/**
 * Measurement 5: one task broadcast to every WebSocket agent of a region (1 000 by default):
 * the time from sending POST /task/request with "mode":"broadcast" until the answer holding
 * every agent's result is in, and the CPU the server spent on it (its main thread, and all its
 * threads). The agents run in AGENT_PROCESSES processes: on two cores one process answering all
 * 1 000 in turn is the slowest part of the run, and its time is not the server's.
 */

import { BENCH_TOKEN, startMoonlight } from './lib/moonlight.ts'
import { type Child, cpuTimeUs, loadAverage, mainThreadCpuUs } from './lib/proc.ts'
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
  /** The server's CPU per broadcast, median: its main thread (JavaScript and its sockets), and all its threads. */
  server_main_cpu_ms: number
  server_cpu_ms: number
  agent_processes: number
  load1: number
}

const REGION = 'ap-southeast-1'
const WARM_UP = 3
const AGENT_PROCESSES = 4

export async function runBroadcast(options: BroadcastOptions): Promise<BroadcastResult> {
  const moonlight = await startMoonlight(options.workDir, { name: 'moonlight-broadcast' })
  const agents: Child[] = []
  try {
    const perProcess = Math.ceil(options.agents / AGENT_PROCESSES)
    for (let at = 0; at < options.agents; at += perProcess) {
      const count = Math.min(perProcess, options.agents - at)
      agents.push(spawnWsAgents(`broadcast-agents-${at}`, moonlight.wsUrl, { count, region: REGION, prefix: `bcast${at}-` }))
    }
    await Promise.all(agents.map((child) => child.waitFor(/registered \d+ in/, 60_000)))
    const body = JSON.stringify({ region: REGION, mode: 'broadcast', payload: { job: 'refresh-cache', key: 'config' } })
    const times: number[] = []
    const mainCpu: number[] = []
    const allCpu: number[] = []
    for (let i = 0; i < WARM_UP + options.repeats; i++) {
      const [mainBefore, allBefore] = [mainThreadCpuUs(moonlight.pid), cpuTimeUs(moonlight.pid)]
      const started = performance.now()
      const response = await fetch(`${moonlight.url}/task/request`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${BENCH_TOKEN}` },
        body,
      })
      const answer = (await response.json()) as { answered?: number; targets?: number }
      const elapsed = performance.now() - started
      if (response.status !== 200 || answer.answered !== options.agents) {
        throw new Error(`broadcast answered ${response.status} with ${answer.answered}/${answer.targets} answers, expected ${options.agents}`)
      }
      if (i >= WARM_UP) {
        times.push(round(elapsed, 2))
        mainCpu.push((mainThreadCpuUs(moonlight.pid) - mainBefore) / 1000)
        allCpu.push((cpuTimeUs(moonlight.pid) - allBefore) / 1000)
      }
    }
    const result: BroadcastResult = {
      agents: options.agents,
      repeats: options.repeats,
      median_ms: round(median(times), 2),
      min_ms: Math.min(...times),
      max_ms: Math.max(...times),
      times_ms: times,
      server_main_cpu_ms: round(median(mainCpu), 2),
      server_cpu_ms: round(median(allCpu), 2),
      agent_processes: agents.length,
      load1: loadAverage(),
    }
    options.log(
      `  broadcast to ${options.agents} agents: median ${result.median_ms} ms (min ${result.min_ms}, max ${result.max_ms}); server CPU ${result.server_main_cpu_ms} ms main thread, ${result.server_cpu_ms} ms all; load ${result.load1}`,
    )
    return result
  } finally {
    await Promise.all(agents.map((child) => child.stop()))
    await moonlight.stop()
  }
}
