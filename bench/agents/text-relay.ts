/**
 * The floor that is really there: the least a proxy on Bun does per task. The request body passes
 * through as text, never parsed: to the agent on --agent-port over a keep-alive pool of `Bun.connect`
 * sockets, or, when it names the WebSocket region, wrapped in a task message to the one WebSocket agent
 * connected to /ws. The agent's answer is decoded once, into the string the response carries; no
 * buffer is copied (but an answer split over reads, which is rare). No auth, validation, balancing,
 * retries, deadlines or stats; answers with Content-Length only. Measured beside the socket relay of
 * bun-relay.ts (which parses the body and re-serializes the payload), it shows what that costs too.
 *
 *   bun bench/agents/text-relay.ts --agent-port N --ws-region R
 */
import { parseArgs } from 'node:util'
import type { ServerWebSocket, Socket } from 'bun'

const { values } = parseArgs({ options: { 'agent-port': { type: 'string' }, 'ws-region': { type: 'string', default: 'eu-west-1' } } })
const agentPort = Number(values['agent-port'])
const requestHead = `POST /work HTTP/1.1\r\nhost: 127.0.0.1:${agentPort}\r\ncontent-type: application/json\r\ncontent-length: `
/** Routing needs the region and nothing else of the body: a substring test, as the bench's bodies are written. */
const wsRegionField = `"region":"${values['ws-region']}"`

interface Pending {
  resolve: (answer: Response) => void
  partial?: Buffer
}
const idle: Socket<Pending | undefined>[] = []
const agentSocketHandlers = {
  data(socket: Socket<Pending | undefined>, data: Buffer) {
    const pending = socket.data
    if (!pending) return
    const received = pending.partial ? Buffer.concat([pending.partial, data]) : data
    const headEnd = received.indexOf('\r\n\r\n')
    const length = headEnd === -1 ? 0 : Number(/content-length: *(\d+)/i.exec(received.toString('latin1', 0, headEnd))?.[1] ?? 0)
    if (headEnd === -1 || received.length < headEnd + 4 + length) {
      pending.partial = received
      return
    }
    socket.data = undefined
    idle.push(socket)
    const status = Number(received.toString('latin1', 9, 12))
    pending.resolve(new Response(received.toString('utf8', headEnd + 4, headEnd + 4 + length), { status, headers: { 'content-type': 'application/json' } }))
  },
  close(socket: Socket<Pending | undefined>) {
    const index = idle.indexOf(socket)
    if (index !== -1) idle.splice(index, 1)
  },
}
async function toHttpAgent(body: string): Promise<Response> {
  const { promise, resolve } = Promise.withResolvers<Response>()
  const socket =
    idle.pop() ?? (await Bun.connect<Pending | undefined>({ hostname: '127.0.0.1', port: agentPort, socket: agentSocketHandlers, data: undefined }))
  socket.data = { resolve }
  socket.write(`${requestHead}${Buffer.byteLength(body)}\r\n\r\n${body}`)
  return promise
}

let sequence = 0
const waiting = new Map<string, (answer: string) => void>()
let wsAgent: ServerWebSocket<undefined> | undefined
function toWsAgent(body: string): Promise<string> {
  const taskId = String(++sequence)
  const { promise, resolve } = Promise.withResolvers<string>()
  waiting.set(taskId, resolve)
  wsAgent!.send(`{"type":"task","task_id":"${taskId}","payload":${body}}`)
  return promise
}

const server = Bun.serve({
  hostname: '127.0.0.1',
  port: 0,
  routes: {
    '/ws': (request, server) => (server.upgrade(request) ? undefined : new Response('upgrade failed', { status: 400 })),
    '/task/request': {
      POST: async (request) => {
        const body = await request.text()
        if (!body.includes(wsRegionField)) return toHttpAgent(body)
        return new Response(await toWsAgent(body), { headers: { 'content-type': 'application/json' } })
      },
    },
  },
  fetch: () => new Response('not found', { status: 404 }),
  websocket: {
    message(socket, message) {
      const text = String(message)
      if (text.includes('"type":"register"')) {
        wsAgent = socket
        socket.send('{"type":"registered"}')
        return
      }
      // The bench agent answers {"type":"task_response","payload":{"task_id":"N","response":R}}: the id and R are cut out, not parsed.
      const idStart = text.indexOf('"task_id":"') + 11
      const idEnd = text.indexOf('"', idStart)
      const taskId = text.slice(idStart, idEnd)
      const resolve = waiting.get(taskId)
      waiting.delete(taskId)
      resolve?.(text.slice(text.indexOf('"response":', idEnd) + 11, -2))
    },
  },
})
console.log(`listening on http://127.0.0.1:${server.port}`)
process.on('SIGTERM', () => process.exit(0))
