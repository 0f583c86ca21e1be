/**
 * The processes several measurements start alike: the trivial HTTP agent and the bare Bun relay
 * (bench/agents/). Each resolves once the process says it is listening.
 */

import { join } from 'node:path'
import { BENCH_TOKEN, type MoonlightProcess, startMoonlight } from './moonlight.ts'
import { type Child, spawnChild } from './proc.ts'

const AGENTS = join(import.meta.dir, '..', 'agents')

/** The trivial HTTP agent, registered by heartbeat with each of `servers` in `region` (none: not registered anywhere). */
export async function startBenchHttpAgent(servers: string[], region: string): Promise<{ child: Child; port: number }> {
  const child = spawnChild('http-agent', [
    process.execPath,
    join(AGENTS, 'http-agent.ts'),
    ...servers.flatMap((server) => ['--server', server]),
    ...(servers.length > 0 ? ['--token', BENCH_TOKEN, '--region', region] : []),
  ])
  const port = Number((await child.waitFor(/agent listening on (\d+)/))[1])
  return { child, port }
}

/**
 * This checkout's Moonlight and, with `beforeRoot`, that commit's (named `<name>-before`), each with
 * `options`, and one trivial HTTP agent registered with both. Every process is pushed on `children`
 * as it starts, for the caller to stop.
 */
export async function startMoonlightsWithAgent(
  workDir: string,
  children: Child[],
  name: string,
  region: string,
  options: { env?: Record<string, string | undefined>; bunArgs?: string[] },
  beforeRoot: string | undefined,
  nowEnv: Record<string, string> = {},
): Promise<{ moonlight: MoonlightProcess; before: MoonlightProcess | undefined; agent: Child; agentPort: number }> {
  const moonlight = await startMoonlight(workDir, { name, ...options, env: { ...options.env, ...nowEnv } })
  children.push(moonlight)
  const before = beforeRoot ? await startMoonlight(workDir, { name: `${name}-before`, ...options, root: beforeRoot }) : undefined
  if (before) children.push(before)
  // One agent process serves every HTTP path, registered with each Moonlight.
  const { child: agent, port: agentPort } = await startBenchHttpAgent(
    [moonlight, ...(before ? [before] : [])].map((server) => server.url),
    region,
  )
  children.push(agent)
  return { moonlight, before, agent, agentPort }
}

/**
 * The bare relay in front of the agent on `agentPort`, calling it with fetch, over its bare socket pool,
 * or through Moonlight's own pool or transport; or (`text`) the text relay, passing the body through
 * unparsed. `bunArgs` go to bun (a profiler, a preload).
 */
export async function startBunRelay(
  agentPort: number,
  wsRegion: string,
  client: 'fetch' | 'socket' | 'pool' | 'transport' | 'text',
  bunArgs: string[] = [],
  env: Record<string, string> = {},
): Promise<{ child: Child; url: string }> {
  const script = client === 'text' ? ['text-relay.ts'] : ['bun-relay.ts', '--client', client]
  const name = client === 'fetch' ? 'bun-relay' : `bun-${client}-relay${env.TEXT_RELAY_CONTRACT === '1' ? '-contract' : ''}`
  const child = spawnChild(
    name,
    [process.execPath, ...bunArgs, join(AGENTS, script[0]!), '--agent-port', String(agentPort), '--ws-region', wsRegion, ...script.slice(1)],
    env,
  )
  const [, url] = await child.waitFor(/listening on (http:\/\/\S+)/)
  return { child, url: url! }
}
