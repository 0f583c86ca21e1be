/**
 * Profiles Moonlight under the benchmark's load: starts it with `bun --cpu-prof`, drives one path
 * with wrk, stops it gracefully (the profile is written at exit) and prints where the time went.
 *
 *   bun bench/profile.ts [http|ws|relay|floor|text-http|text-ws] [seconds] [connections]
 *
 * floor: the bare relay of `--floor` calling the same HTTP agent over its bare socket pool
 * (bench/agents/bun-relay.ts --client socket), profiled the same way, to set Moonlight's HTTP path
 * beside it function by function. Each line shows its share of the samples and, from the sampling
 * interval and the tasks answered, the JS thread's µs per task it stands for.
 *
 * text-http, text-ws: the text relay (bench/agents/text-relay.ts), the floor CPU per task is held to,
 * to its HTTP agent or its one WebSocket agent. connections: wrk's (default 64; 1 for latency).
 *
 * relay: a redis-server and two instances in one cluster, both profiled; wrk calls A for the agent
 * B holds, so every task goes A → Redis → B → agent and back.
 *
 * broadcast: 1 000 WebSocket agents in one region (4 agent processes, as bench/broadcast.ts), and
 * `seconds` × 10 broadcasts to them one after another; the figures are per broadcast.
 */

import { mkdtempSync, readdirSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { REMOTE_REGION, startRedis, startWsAgent } from './cluster.ts'
import { HTTP_REGION, WS_REGION } from './http-path.ts'
import { startBenchHttpAgent, startBunRelay } from './lib/bench-processes.ts'
import { BENCH_TOKEN, startMoonlight } from './lib/moonlight.ts'
import type { Child } from './lib/proc.ts'
import { BODY, wrk } from './lib/wrk.ts'
import { spawnWsAgents } from './lib/ws-agents.ts'

const PATHS = ['http', 'ws', 'relay', 'floor', 'text-http', 'text-ws', 'broadcast'] as const
const path = PATHS.find((each) => each === process.argv[2]) ?? 'http'
const connections = Number(process.argv[4] ?? 64)
const INTERVAL_US = 200
const seconds = Number(process.argv[3] ?? 8)
const dir = mkdtempSync(join(tmpdir(), 'mls-profile-'))
const children: Child[] = []
const profiled = (name: string) => ['--cpu-prof', `--cpu-prof-dir=${join(dir, name)}`, `--cpu-prof-interval=${INTERVAL_US}`]
try {
  if (path === 'relay') await profileRelay()
  else if (path === 'floor') await profileFloor()
  else if (path === 'text-http' || path === 'text-ws') await profileText(path)
  else if (path === 'broadcast') await profileBroadcast()
  else await profileOne()
} finally {
  await Promise.all(children.reverse().map((child) => child.stop()))
}

async function profileRelay(): Promise<void> {
  const redis = await startRedis()
  children.push(redis.child)
  const cluster = (id: string) => ({ cluster: { redis_url: redis.url, instance_id: id, key_prefix: 'mls-profile:' } })
  const a = await startMoonlight(dir, { name: 'a', bunArgs: profiled('a'), config: cluster('a') })
  children.push(a)
  const b = await startMoonlight(dir, { name: 'b', bunArgs: profiled('b'), config: cluster('b') })
  children.push(b)
  const agent = startWsAgent(b, REMOTE_REGION, 'b-held')
  children.push(agent)
  await agent.waitFor(/registered 1 in/)
  // A hears of B's agent through Redis: wait until the relayed path answers.
  for (let i = 0; ; i++) {
    const response = await fetch(`${a.url}/task/request`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${BENCH_TOKEN}` },
      body: BODY(REMOTE_REGION),
    })
    await response.arrayBuffer()
    if (response.status === 200) break
    if (i > 100) throw new Error(`A never reached B's agent: ${response.status}`)
    await Bun.sleep(100)
  }
  const result = await wrk({ url: `${a.url}/task/request`, body: BODY(REMOTE_REGION) }, 64, seconds)
  console.log(`relay: ${(result.requests / (result.duration_us / 1e6)).toFixed(0)} req/s under the profiler (slower than without it)`)
  for (const [name, server] of [
    ['A (the instance wrk calls)', a],
    ['B (the holder of the agent)', b],
  ] as const) {
    await server.stop()
    const profileDir = join(dir, server.name)
    const file = readdirSync(profileDir).find((entry) => entry.endsWith('.cpuprofile'))
    if (!file) throw new Error(`no .cpuprofile in ${profileDir}`)
    console.log(`\n=== ${name}: ${join(profileDir, file)}\n`)
    printTop(JSON.parse(readFileSync(join(profileDir, file), 'utf8')) as CpuProfile, result.requests)
  }
}

async function profileFloor(): Promise<void> {
  const { child: agent, port: agentPort } = await startBenchHttpAgent([], HTTP_REGION)
  children.push(agent)
  const { child: relay, url: relayUrl } = await startBunRelay(agentPort, WS_REGION, 'socket', profiled('floor'))
  children.push(relay)
  const result = await wrk({ url: `${relayUrl}/task/request`, body: BODY(HTTP_REGION) }, 64, seconds)
  console.log(`floor: ${(result.requests / (result.duration_us / 1e6)).toFixed(0)} req/s under the profiler (slower than without it)`)
  await relay.stop()
  const profileDir = join(dir, 'floor')
  const file = readdirSync(profileDir).find((entry) => entry.endsWith('.cpuprofile'))
  if (!file) throw new Error(`no .cpuprofile in ${profileDir}`)
  console.log(`profile: ${join(profileDir, file)}\n`)
  printTop(JSON.parse(readFileSync(join(profileDir, file), 'utf8')) as CpuProfile, result.requests)
}

async function profileText(which: 'text-http' | 'text-ws'): Promise<void> {
  const { child: agent, port: agentPort } = await startBenchHttpAgent([], HTTP_REGION)
  children.push(agent)
  const { child: relay, url: relayUrl } = await startBunRelay(agentPort, WS_REGION, 'text', profiled('text'))
  children.push(relay)
  if (which === 'text-ws') {
    const wsAgent = spawnWsAgents('ws-agent', `${relayUrl.replace(/^http/, 'ws')}/ws`, { count: 1, region: WS_REGION })
    children.push(wsAgent)
    await wsAgent.waitFor(/registered 1 in/)
  }
  const result = await wrk({ url: `${relayUrl}/task/request`, body: BODY(which === 'text-ws' ? WS_REGION : HTTP_REGION) }, connections, seconds)
  console.log(`${which}: ${(result.requests / (result.duration_us / 1e6)).toFixed(0)} req/s at ${connections} connections under the profiler`)
  await relay.stop()
  const profileDir = join(dir, 'text')
  const file = readdirSync(profileDir).find((entry) => entry.endsWith('.cpuprofile'))
  if (!file) throw new Error(`no .cpuprofile in ${profileDir}`)
  console.log(`profile: ${join(profileDir, file)}\n`)
  printTop(JSON.parse(readFileSync(join(profileDir, file), 'utf8')) as CpuProfile, result.requests)
}

async function profileBroadcast(): Promise<void> {
  const moonlight = await startMoonlight(dir, { bunArgs: profiled('broadcast') })
  children.push(moonlight)
  const agents = 1000
  const region = 'ap-southeast-1'
  for (let at = 0; at < agents; at += agents / 4) {
    const child = spawnWsAgents(`agents-${at}`, moonlight.wsUrl, { count: agents / 4, region, prefix: `bcast${at}-` })
    children.push(child)
    await child.waitFor(/registered \d+ in/, 60_000)
  }
  const body = JSON.stringify({ region, mode: 'broadcast', payload: { job: 'refresh-cache', key: 'config' } })
  const broadcasts = seconds * 10
  const started = performance.now()
  for (let i = 0; i < broadcasts; i++) {
    const response = await fetch(`${moonlight.url}/task/request`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${BENCH_TOKEN}` },
      body,
    })
    const answer = (await response.json()) as { answered?: number }
    if (answer.answered !== agents) throw new Error(`broadcast ${i}: ${answer.answered} of ${agents} answered`)
  }
  console.log(`broadcast: ${broadcasts} to ${agents} agents, ${((performance.now() - started) / broadcasts).toFixed(1)} ms each under the profiler`)
  await moonlight.stop()
  const profileDir = join(dir, 'broadcast')
  const file = readdirSync(profileDir).find((entry) => entry.endsWith('.cpuprofile'))
  if (!file) throw new Error(`no .cpuprofile in ${profileDir}`)
  console.log(`profile: ${join(profileDir, file)}\n`)
  printTop(JSON.parse(readFileSync(join(profileDir, file), 'utf8')) as CpuProfile, broadcasts)
}

async function profileOne(): Promise<void> {
  const moonlight = await startMoonlight(dir, { bunArgs: ['--cpu-prof', `--cpu-prof-dir=${dir}`, '--cpu-prof-interval=200'] })
  children.push(moonlight)
  if (path === 'http') children.push((await startBenchHttpAgent([moonlight.url], HTTP_REGION)).child)
  else {
    const agent = spawnWsAgents('ws-agent', moonlight.wsUrl, { count: 1, region: WS_REGION })
    children.push(agent)
    await agent.waitFor(/registered 1 in/)
  }
  const result = await wrk({ url: `${moonlight.url}/task/request`, body: BODY(path === 'http' ? HTTP_REGION : WS_REGION) }, connections, seconds)
  console.log(
    `${path}: ${(result.requests / (result.duration_us / 1e6)).toFixed(0)} req/s at ${connections} connections under the profiler (slower than without it)`,
  )
  await moonlight.stop()
  const file = readdirSync(dir).find((name) => name.endsWith('.cpuprofile'))
  if (!file) throw new Error(`no .cpuprofile in ${dir}`)
  console.log(`profile: ${join(dir, file)}\n`)
  printTop(JSON.parse(readFileSync(join(dir, file), 'utf8')) as CpuProfile, result.requests)
}

interface CpuProfile {
  nodes: Array<{ id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }>
  samples: number[]
}

/** Self and inclusive sample shares per function, the top 40 by self time, with the µs per task each share stands for. */
function printTop(profile: CpuProfile, tasks: number): void {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]))
  const parent = new Map<number, number>()
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id)
  const label = (id: number) => {
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame
    const file = url.replace(/^.*\/(node_modules\/|src\/)/, '$1')
    return `${functionName || '(anonymous)'} ${file}:${lineNumber + 1}`
  }
  const self = new Map<string, number>()
  const inclusive = new Map<string, number>()
  for (const sample of profile.samples) {
    self.set(label(sample), (self.get(label(sample)) ?? 0) + 1)
    const seen = new Set<string>()
    for (let id: number | undefined = sample; id !== undefined; id = parent.get(id)) {
      const name = label(id)
      if (seen.has(name)) continue
      seen.add(name)
      inclusive.set(name, (inclusive.get(name) ?? 0) + 1)
    }
  }
  const total = profile.samples.length
  const pct = (n: number) => `${((100 * n) / total).toFixed(1).padStart(5)}%`
  const perTask = (n: number) => `${((n * INTERVAL_US) / tasks).toFixed(2).padStart(6)} µs`
  const idle = self.get('(idle) :0') ?? 0
  console.log(`${tasks} tasks; JS thread busy ${perTask(total - idle)} per task (sampled every ${INTERVAL_US} µs)\n`)
  console.log('self    incl    self/task  function')
  for (const [name, count] of [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, 40)) {
    console.log(`${pct(count)}  ${pct(inclusive.get(name) ?? 0)}  ${perTask(count)}  ${name}`)
  }
  console.log('\ninclusive, top 40')
  for (const [name, count] of [...inclusive.entries()].sort((a, b) => b[1] - a[1]).slice(0, 40)) console.log(`${pct(count)}  ${perTask(count)}  ${name}`)
}
