/**
 * Issue 24's capacity bench, in one process in a few tens of seconds (a smoke run, not a published
 * figure: the server and the agents share the cores):
 * - a slow (100 ms) and a fast (5 ms) WebSocket agent under 16 closed-loop callers, with
 *   routing.balance "round_robin" and "least_request": throughput, p99 and the fast agent's share;
 * - a one-slot fleet (4 agents, max_in_flight 1, 20 ms each) under a burst of 64 tasks: the most any
 *   agent held at once (must be 1), and queue wait p50/p99 from the callers' side.
 *
 *   bun bench/capacity.ts [--seconds 5]
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { parseConfig } from '../src/config/config.ts'
import { startServer } from '../src/server/server.ts'

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '5' } } })
const runMs = Number(values.seconds) * 1000
const TOKEN = 'bench-token-0123456789'
const seed = JSON.parse(readFileSync(join(import.meta.dir, '..', 'mls.json.example'), 'utf8'))

function serve(overrides: Record<string, unknown>) {
  const raw = { ...seed, tokens: [TOKEN], access: [], ...overrides }
  const server = startServer({ loaded: parseConfig(raw, 'bench'), port: 0, host: '127.0.0.1', log: () => {} })
  return { server, url: server.url, wsUrl: `${server.url.replace(/^http/, 'ws')}${server.settings.config.ws.path}` }
}

/** A WebSocket agent answering after `delayMs`; counts what it holds at once. */
async function agent(wsUrl: string, nodeId: string, delayMs: number, register: Record<string, unknown> = {}) {
  const socket = new WebSocket(wsUrl)
  const figures = { served: 0, holding: 0, most: 0 }
  await new Promise((resolve) => socket.addEventListener('open', resolve, { once: true }))
  const registered = new Promise((resolve) => socket.addEventListener('message', resolve, { once: true }))
  socket.addEventListener('message', (event) => {
    const message = JSON.parse(String(event.data))
    if (message.type !== 'task') return
    figures.most = Math.max(figures.most, ++figures.holding)
    setTimeout(() => {
      figures.holding--
      figures.served++
      socket.send(JSON.stringify({ type: 'task_response', payload: { task_id: message.task_id, response: 'ok' } }))
    }, delayMs)
  })
  socket.send(JSON.stringify({ type: 'register', payload: { node_id: nodeId, token: TOKEN, region: 'eu-west-1', ...register } }))
  await registered
  return { figures, close: () => socket.close() }
}

const call = (url: string) =>
  fetch(`${url}/task/request`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` },
    body: '{"region":"eu-west-1","payload":1}',
  }).then((response) => response.status)

function percentile(sorted: readonly number[], p: number): number {
  return sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!
}

async function slowFastPair(balance: string) {
  const { server, url, wsUrl } = serve({ routing: { balance } })
  const slow = await agent(wsUrl, 'slow', 100)
  const fast = await agent(wsUrl, 'fast', 5)
  const latencies: number[] = []
  const until = performance.now() + runMs
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (performance.now() < until) {
        const started = performance.now()
        if ((await call(url)) === 200) latencies.push(performance.now() - started)
      }
    }),
  )
  slow.close()
  fast.close()
  await server.stop(0)
  latencies.sort((a, b) => a - b)
  return {
    balance,
    tasks_per_s: Math.round(latencies.length / (runMs / 1000)),
    p50_ms: Math.round(percentile(latencies, 50) * 10) / 10,
    p99_ms: Math.round(percentile(latencies, 99) * 10) / 10,
    fast_share: Math.round((fast.figures.served / (fast.figures.served + slow.figures.served)) * 100) / 100,
  }
}

async function oneSlotBurst() {
  const { server, url, wsUrl } = serve({ queue: { timeout: 30 } })
  const fleet = await Promise.all([1, 2, 3, 4].map((n) => agent(wsUrl, `gpu-${n}`, 20, { max_in_flight: 1 })))
  const waits: number[] = []
  const statuses = await Promise.all(
    Array.from({ length: 64 }, async () => {
      const started = performance.now()
      const status = await call(url)
      // The caller's time less the 20 ms of work: the time it spent waiting for a slot (and the hops).
      waits.push(performance.now() - started - 20)
      return status
    }),
  )
  for (const member of fleet) member.close()
  await server.stop(0)
  waits.sort((a, b) => a - b)
  return {
    tasks: statuses.length,
    answered: statuses.filter((status) => status === 200).length,
    most_held_by_one_agent: Math.max(...fleet.map((member) => member.figures.most)),
    queue_wait_p50_ms: Math.round(percentile(waits, 50)),
    queue_wait_p99_ms: Math.round(percentile(waits, 99)),
  }
}

const pair = [await slowFastPair('round_robin'), await slowFastPair('least_request')]
const burst = await oneSlotBurst()
console.log(`CAPACITY_JSON ${JSON.stringify({ slow_fast_pair: pair, one_slot_burst: burst })}`)
