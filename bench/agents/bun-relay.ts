/**
 * The floor for any proxy written on Bun: the least a relay can do per task, with none of
 * Moonlight's work (no auth, validation, balancing, retries, timeouts or stats). POST /task/request
 * forwards the body's payload to one agent: to --agent-port's /work (over fetch, or with `--client
 * socket` over a bare keep-alive pool of `Bun.connect` sockets: the floor of any proxy built on Bun's
 * sockets, as Moonlight's own client is since issue 13), or over the one WebSocket agent connected to
 * /ws when the body's region is the WebSocket one. Measured beside Moonlight (`--floor`), it separates
 * what Moonlight costs from what the platform costs.
 *
 * Two more clients put Moonlight's own pieces, and only them, in the bare socket pool's place:
 * `--client pool` calls the agent through Moonlight's HttpClientPool (src/transports/http-client/pool.ts: the
 * bound, the parser, the stale-socket rule), `--client transport` through its HttpTransport
 * (src/transports/http.ts: the pool plus the deadline, the answer's size limit, content codings
 * and header policy). Socket pool → pool → transport → Moonlight: each step's cost, in one run.
 *
 *   bun bench/agents/bun-relay.ts --agent-port N --ws-region R [--client fetch|socket|pool|transport]
 */

import { parseArgs } from 'node:util'
import type { ServerWebSocket, Socket } from 'bun'
import { systemClock } from '../../src/clock.ts'
import type { Client } from '../../src/fleet/registry.ts'
import { HeaderPolicy } from '../../src/security/answer-headers.ts'
import { DeadlineTimer } from '../../src/tasks/deadlines.ts'
import { HttpTransport } from '../../src/transports/http.ts'
import { type AnswerSink, HttpClientPool } from '../../src/transports/http-client/pool.ts'
import type { ResponseHead } from '../../src/transports/http-client/response-parser.ts'

const { values } = parseArgs({
  options: { 'agent-port': { type: 'string' }, 'ws-region': { type: 'string', default: 'eu-west-1' }, client: { type: 'string', default: 'fetch' } },
})
const agentPort = Number(values['agent-port'])
const workUrl = `http://127.0.0.1:${agentPort}/work`

/** The least a keep-alive socket pool does: no bound, no deadline, no chunked bodies; Content-Length answers only. */
interface Pending {
  resolve: (answer: Response) => void
  buffered: Buffer
}
const idle: Socket<Pending | undefined>[] = []
const socketHandlers = {
  data(socket: Socket<Pending | undefined>, data: Buffer) {
    const pending = socket.data
    if (!pending) return
    pending.buffered = pending.buffered.length ? Buffer.concat([pending.buffered, data]) : data
    const headEnd = pending.buffered.indexOf('\r\n\r\n')
    if (headEnd === -1) return
    const head = pending.buffered.toString('latin1', 0, headEnd)
    const length = Number(/content-length: *(\d+)/i.exec(head)?.[1] ?? 0)
    if (pending.buffered.length < headEnd + 4 + length) return
    const status = Number(head.slice(9, 12))
    const type = /content-type: *([^\r]+)/i.exec(head)?.[1] ?? 'application/json'
    const body = pending.buffered.subarray(headEnd + 4, headEnd + 4 + length)
    socket.data = undefined
    idle.push(socket)
    pending.resolve(new Response(Uint8Array.prototype.slice.call(body), { status, headers: { 'content-type': type } }))
  },
  close(socket: Socket<Pending | undefined>) {
    const index = idle.indexOf(socket)
    if (index !== -1) idle.splice(index, 1)
  },
}
async function viaSocket(payloadJson: string): Promise<Response> {
  const body = Buffer.from(payloadJson)
  const request = Buffer.concat([
    Buffer.from(`POST /work HTTP/1.1\r\nhost: 127.0.0.1:${agentPort}\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n`),
    body,
  ])
  const { promise, resolve } = Promise.withResolvers<Response>()
  const pending: Pending = { resolve, buffered: Buffer.alloc(0) }
  let socket = idle.pop()
  if (!socket) socket = await Bun.connect<Pending | undefined>({ hostname: '127.0.0.1', port: agentPort, socket: socketHandlers, data: undefined })
  socket.data = pending
  socket.write(request)
  return promise
}
/** Task ids for the agent (and the WebSocket path's task_id). */
let sequence = 0

/** Moonlight's own client with nothing around it: the answer's status, content type and body, as the socket relay passes them. */
const pool = new HttpClientPool({ maxConnections: 64, idleTimeoutMs: 30_000 })
const agentAddress = { scheme: 'http' as const, host: '127.0.0.1', port: agentPort }
class BodySink implements AnswerSink {
  status = 0
  type = 'application/json'
  chunks: Uint8Array<ArrayBuffer>[] = []
  head(head: ResponseHead): number {
    this.status = head.status
    for (const [name, value] of head.headers) if (name === 'content-type') this.type = value
    return 1024 * 1024
  }
  body(chunk: Uint8Array): void {
    this.chunks.push(Uint8Array.prototype.slice.call(chunk) as Uint8Array<ArrayBuffer>)
  }
  end(): void {}
}
async function viaPool(payloadJson: string): Promise<Response> {
  const request = `POST /work HTTP/1.1\r\nhost: 127.0.0.1:${agentPort}\r\ncontent-type: application/json\r\nx-task-id: ${++sequence}\r\ncontent-length: ${Buffer.byteLength(payloadJson)}\r\n\r\n${payloadJson}`
  const sink = new BodySink()
  await pool.request(agentAddress, request, sink).done
  return new Response(sink.chunks.length === 1 ? sink.chunks[0]! : Bun.concatArrayBuffers(sink.chunks), {
    status: sink.status,
    headers: { 'content-type': sink.type },
  })
}

/** Moonlight's HttpTransport, as the dispatcher calls it: one attempt under a deadline (no retries, balancing or stats). */
const headerPolicy = new HeaderPolicy()
const transport = new HttpTransport(() => ({ maxAnswerBytes: 1024 * 1024, headerPolicy, maxConnections: 64, idleTimeoutMs: 30_000 }), Date.now)
const deadlines = new DeadlineTimer(systemClock)
const agentClient = { scheme: 'http', ip: '127.0.0.1', port: agentPort, nodeId: 'bench-http-1' } as Client
async function viaTransport(payloadJson: string): Promise<Response> {
  const deadline = deadlines.start(30_000)
  try {
    const answer = await transport.send(agentClient, String(++sequence), payloadJson, deadline)
    return new Response(answer.body, { status: answer.status, headers: answer.headers })
  } finally {
    deadlines.end(deadline)
  }
}

const waiting = new Map<string, (answer: string) => void>()
let agentSocket: ServerWebSocket<undefined> | undefined

const server = Bun.serve({
  hostname: '127.0.0.1',
  port: 0,
  routes: {
    '/ws': (request, server) => (server.upgrade(request) ? undefined : new Response('upgrade failed', { status: 400 })),
    '/task/request': {
      POST: async (request) => {
        const { region, payload } = (await request.json()) as { region: string; payload: unknown }
        if (region !== values['ws-region']) {
          if (values.client === 'socket') return viaSocket(JSON.stringify(payload))
          if (values.client === 'pool') return viaPool(JSON.stringify(payload))
          if (values.client === 'transport') return viaTransport(JSON.stringify(payload))
          const answer = await fetch(workUrl, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(payload) })
          return new Response(await answer.arrayBuffer(), {
            status: answer.status,
            headers: { 'content-type': answer.headers.get('content-type') ?? 'application/json' },
          })
        }
        const taskId = String(++sequence)
        const answer = new Promise<string>((resolve) => waiting.set(taskId, resolve))
        agentSocket!.send(`{"type":"task","task_id":"${taskId}","payload":${JSON.stringify(payload)}}`)
        return new Response(await answer, { headers: { 'content-type': 'application/json' } })
      },
    },
  },
  fetch: () => new Response('not found', { status: 404 }),
  websocket: {
    message(socket, raw) {
      const message = JSON.parse(String(raw)) as { type: string; payload: { task_id: string; response: unknown } }
      if (message.type === 'register') {
        agentSocket = socket
        socket.send('{"type":"registered"}')
        return
      }
      const resolve = waiting.get(message.payload.task_id)
      waiting.delete(message.payload.task_id)
      resolve?.(JSON.stringify(message.payload.response))
    },
  },
})
console.log(`listening on http://127.0.0.1:${server.port}`)
// Exit normally on SIGTERM, so a profile (bun --cpu-prof) is written.
process.on('SIGTERM', () => process.exit(0))
