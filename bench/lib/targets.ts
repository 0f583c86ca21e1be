/**
 * Starting one of the four task paths the profiling scripts compare (bench/alloc.ts, bench/threads.ts):
 * Moonlight to its HTTP agent or its WebSocket agent, and the text relay (the floor) to the same.
 */
import { HTTP_REGION, WS_REGION } from '../http-path.ts'
import { startBenchHttpAgent, startBunRelay } from './bench-processes.ts'
import { startMoonlight } from './moonlight.ts'
import type { Child } from './proc.ts'
import { BODY } from './wrk.ts'
import { spawnWsAgents } from './ws-agents.ts'

export const PATH_TARGETS = ['moonlight-http', 'moonlight-ws', 'text-http', 'text-ws'] as const
/** Besides the four: the contract floor (the text relay doing what every task must) and a relay over Moonlight's HttpTransport, the layers between. */
export const LAYER_TARGETS = ['contract-http', 'transport-http'] as const
export type PathTarget = (typeof PATH_TARGETS)[number] | (typeof LAYER_TARGETS)[number]

export interface StartedTarget {
  url: string
  body: string
  /** The proxy's process. */
  proxy: Child
  /** Every process started, the proxy's included, to stop in reverse order. */
  children: Child[]
}

/** `bunArgs` and `env` go to the proxy's process only (a preload, a profiler, a JSC option). */
export async function startTarget(target: PathTarget, dir: string, bunArgs: string[] = [], env: Record<string, string> = {}): Promise<StartedTarget> {
  const children: Child[] = []
  const body = BODY(target.endsWith('http') ? HTTP_REGION : WS_REGION)
  if (target.startsWith('moonlight')) {
    const moonlight = await startMoonlight(dir, { name: target, bunArgs, env })
    children.push(moonlight)
    if (target === 'moonlight-http') children.push((await startBenchHttpAgent([moonlight.url], HTTP_REGION)).child)
    else {
      const agent = spawnWsAgents('ws-agent', moonlight.wsUrl, { count: 1, region: WS_REGION })
      children.push(agent)
      await agent.waitFor(/registered 1 in/)
    }
    return { url: moonlight.url, body, proxy: moonlight, children }
  }
  const { child: agent, port } = await startBenchHttpAgent([], HTTP_REGION)
  children.push(agent)
  const client = target === 'transport-http' ? 'transport' : 'text'
  const relay = await startBunRelay(port, WS_REGION, client, bunArgs, target === 'contract-http' ? { ...env, TEXT_RELAY_CONTRACT: '1' } : env)
  children.push(relay.child)
  if (target === 'text-ws') {
    const wsAgent = spawnWsAgents('ws-agent', `${relay.url.replace(/^http/, 'ws')}/ws`, { count: 1, region: WS_REGION })
    children.push(wsAgent)
    await wsAgent.waitFor(/registered 1 in/)
  }
  return { url: relay.url, body, proxy: relay.child, children }
}
