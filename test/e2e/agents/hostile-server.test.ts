/**
 * `moonlight agent` against a hostile or broken server: a real WebSocket server (Bun.serve on
 * 127.0.0.1) that sends what a Moonlight server never should, and the agent as a real process. Each
 * test failed before its fix (a hostile pass).
 */
import { afterAll, afterEach, describe, expect, test } from 'bun:test'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Server, ServerWebSocket } from 'bun'
import { type CliProcess, startCli, waitFor } from '../../support/helpers.ts'

const tmp = mkdtempSync(join(tmpdir(), 'mls-hostile-server-'))
afterAll(() => rmSync(tmp, { recursive: true, force: true }))

/** Logs each run and each abort; `wait` holds it (until cancelled), `throwIt` is thrown as it is. */
const HANDLER = join(tmp, 'handler.ts')
writeFileSync(
  HANDLER,
  `export default async (payload: any, { taskId, signal }: any) => {
  console.log('HANDLER-RUN ' + taskId)
  if (payload?.throwIt !== undefined) throw payload.throwIt
  if (payload?.wait) await new Promise((done) => { signal.addEventListener('abort', done); setTimeout(done, payload.wait) })
  if (signal.aborted) console.log('ABORTED ' + taskId)
  return { echo: taskId }
}
`,
)

type Peer = ServerWebSocket<{ connection: number }>
interface HostileServer {
  server: Server<{ connection: number }>
  url: string
  /** Every frame the agent sent, with the connection it came on. */
  received: Array<{ connection: number; message: any }>
  connections: () => number
}

/** Every server a test started, stopped after it. */
const servers: Array<{ stop: (closeActiveConnections?: boolean) => unknown }> = []
let agents: CliProcess[] = []

afterEach(async () => {
  for (const agent of agents) {
    agent.kill('SIGKILL')
    await agent.exited
  }
  agents = []
  for (const server of servers.splice(0)) server.stop(true)
})

/** A WebSocket "server" that calls `onMessage` with each parsed frame the agent sends. */
function hostileServer(onMessage: (ws: Peer, message: any) => void): HostileServer {
  const received: HostileServer['received'] = []
  let connections = 0
  const server = Bun.serve<{ connection: number }, never>({
    hostname: '127.0.0.1',
    port: 0,
    fetch(request, bunServer) {
      if (bunServer.upgrade(request, { data: { connection: ++connections } })) return
      return new Response('not found', { status: 404 })
    },
    websocket: {
      message(ws, raw) {
        const message = JSON.parse(String(raw))
        received.push({ connection: ws.data.connection, message })
        onMessage(ws, message)
      },
    },
  })
  servers.push(server)
  return { server, url: `http://127.0.0.1:${server.port}`, received, connections: () => connections }
}

function registered(ws: Peer): void {
  ws.send(
    JSON.stringify({ type: 'registered', payload: { node_id: 'n1', region: 'r', weight: 1, heartbeat_interval: 5, server_time: new Date().toISOString() } }),
  )
}

function startAgent(server: string, extra: string[] = []): CliProcess {
  const agent = startCli(['agent', '--server', server, '--token', 'tok', '--region', 'r', '--node-id', 'n1', '--handler', HANDLER, ...extra])
  agents.push(agent)
  return agent
}

const answersFor = (server: HostileServer, taskId: string) =>
  server.received.filter(({ message }) => message.type === 'task_response' && message.payload.task_id === taskId)

describe('a task id sent twice on one connection', () => {
  test('the handler runs once for one task id', async () => {
    const server = hostileServer((ws, message) => {
      if (message.type !== 'register') return
      registered(ws)
      ws.send('{"type":"task","task_id":"dup","payload":{"wait":200}}')
      ws.send('{"type":"task","task_id":"dup","payload":{"wait":200}}')
    })
    const agent = startAgent(server.url)
    await waitFor(() => answersFor(server, 'dup').length > 0, 'an answer to dup', 10_000)
    await Bun.sleep(500)
    expect(agent.count('HANDLER-RUN dup')).toBe(1)
    expect(answersFor(server, 'dup')).toHaveLength(1)
  })

  test('a cancel still reaches the running task after a duplicate of its id has ended', async () => {
    const server = hostileServer((ws, message) => {
      if (message.type !== 'register') return
      registered(ws)
      // The real one holds until cancelled; the duplicate ends at once and, ending, forgets the id.
      ws.send('{"type":"task","task_id":"long","payload":{"wait":5000}}')
      ws.send('{"type":"task","task_id":"long","payload":{}}')
      setTimeout(() => ws.send('{"type":"cancel","task_id":"long"}'), 500)
    })
    const agent = startAgent(server.url)
    await agent.waitForOutput('registered as n1')
    await Bun.sleep(1500)
    expect(agent.output()).toContain('ABORTED long')
  })
})

describe('a handler that throws what cannot be made a string', () => {
  test('WebSocket: the agent answers 500 and keeps running (no unhandled rejection ends it)', async () => {
    const server = hostileServer((ws, message) => {
      if (message.type !== 'register') return
      registered(ws)
      // {"toString": 1}: String() of it throws "No default value".
      ws.send('{"type":"task","task_id":"unprintable","payload":{"throwIt":{"toString":1}}}')
      setTimeout(() => ws.send('{"type":"task","task_id":"next","payload":{}}'), 300)
    })
    const agent = startAgent(server.url)
    await agent.waitForOutput('HANDLER-RUN unprintable')
    await Bun.sleep(1000)
    expect(agent.process.exitCode).toBeNull()
    expect(answersFor(server, 'unprintable').map(({ message }) => message.payload.status)).toEqual([500])
    expect(answersFor(server, 'next')).toHaveLength(1)
  })

  test("--http: /work answers a JSON 500, not Bun's error page with the agent's source", async () => {
    const heartbeats = Bun.serve({
      hostname: '127.0.0.1',
      port: 0,
      fetch: () => Response.json({ status: 'ok', server_time: new Date().toISOString(), node_id: 'n1', region: 'r', weight: 1, client_ttl: 90 }),
    })
    servers.push(heartbeats)
    const agent = startAgent(`http://127.0.0.1:${heartbeats.port}`, ['--http', '0'])
    await agent.waitForOutput('registered as n1')
    const port = Number(/serving POST \/work on port (\d+)/.exec(agent.output())![1])
    const response = await fetch(`http://127.0.0.1:${port}/work`, { method: 'POST', body: '{"throwIt":{"toString":1}}' })
    const text = await response.text()
    expect(response.status).toBe(500)
    expect(response.headers.get('content-type')).toContain('application/json')
    expect(text).not.toContain('handler.ts')
  })
})

describe('servers that fail the agent', () => {
  test('a server that upgrades the WebSocket and then says nothing does not hold the agent forever: it moves to the next', async () => {
    const silent = hostileServer(() => {})
    const good = hostileServer((ws, message) => {
      if (message.type === 'register') registered(ws)
    })
    const agent = startAgent(`${silent.url},${good.url}`)
    // The server's own register_timeout is 10 s by default: twice that is ample for any bound the agent picks.
    await agent.waitForOutput(`registered as n1 in r (weight 1) at ws://127.0.0.1:${good.server.port}/ws`, 20_000)
  }, 60_000)

  test('two servers that register the agent and close at once do not make it reconnect in a tight loop', async () => {
    const flapping = () =>
      hostileServer((ws, message) => {
        if (message.type !== 'register') return
        registered(ws)
        ws.close(1011, 'going away')
      })
    const first = flapping()
    const second = flapping()
    startAgent(`${first.url},${second.url}`)
    await Bun.sleep(3000)
    // Back-off from 0.25 s allows a handful; today it is about 2000 connections in 3 s.
    expect(first.connections() + second.connections()).toBeLessThan(60)
  })
})
