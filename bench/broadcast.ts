/**
 * Measurement 5: one task broadcast to every WebSocket agent of a region (1 000 by default):
 * the time from sending POST /task/request with "mode":"broadcast" until the answer holding
 * every agent's result is in.
 */

import { BENCH_TOKEN, startMoonlight } from './lib/moonlight.ts'
import { type Child, loadAverage } from './lib/proc.ts'
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
  load1: number
}

const REGION = 'ap-southeast-1'
const WARM_UP = 3

export async function runBroadcast(options: BroadcastOptions): Promise<BroadcastResult> {
  const moonlight = await startMoonlight(options.workDir, { name: 'moonlight-broadcast' })
  let agents: Child | undefined
  try {
    agents = spawnWsAgents('broadcast-agents', moonlight.wsUrl, { count: options.agents, region: REGION, prefix: 'bcast' })
    await agents.waitFor(/registered \d+ in/, 60_000)
    const body = JSON.stringify({ region: REGION, mode: 'broadcast', payload: { job: 'refresh-cache', key: 'config' } })
    const times: number[] = []
    for (let i = 0; i < WARM_UP + options.repeats; i++) {
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
      if (i >= WARM_UP) times.push(round(elapsed, 2))
    }
    const result: BroadcastResult = {
      agents: options.agents,
      repeats: options.repeats,
      median_ms: round(median(times), 2),
      min_ms: Math.min(...times),
      max_ms: Math.max(...times),
      times_ms: times,
      load1: loadAverage(),
    }
    options.log(`  broadcast to ${options.agents} agents: median ${result.median_ms} ms (min ${result.min_ms}, max ${result.max_ms}), load ${result.load1}`)
    return result
  } finally {
    await agents?.stop()
    await moonlight.stop()
  }
}
