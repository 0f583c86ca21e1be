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
/** The contract mode's head, up to the task id (made once, as Moonlight makes it once per agent). */
const contractHeadStart = `POST /work HTTP/1.1\r\nhost: 127.0.0.1:${agentPort}\r\ncontent-type: application/json\r\nx-task-id: `
/** Routing needs the region and nothing else of the body: a substring test, as the bench's bodies are written. */
const wsRegionField = `"region":"${values['ws-region']}"`
/**
 * TEXT_RELAY_CONTRACT=1: the least of what Moonlight's contract asks of every task on top of the bare
 * relay — the bearer token checked by its SHA-256, the body parsed as JSON and its region read, only
 * the payload's text sent on with an X-Task-Id, and the answer carrying the headers a Moonlight
 * answer carries (task id, node, attempts, nosniff, sandbox); on the WebSocket path (a body whose region
 * is --ws-region) the agent's messages parsed too. No balancing, deadlines, retries or stats.
 */
const contract = process.env.TEXT_RELAY_CONTRACT === '1'
const grants = new Map([[Bun.SHA256.hash('bench-token-0123456789', 'base64'), true]])
let contractSequence = 0

interface Pending {
  resolve: (answer: Response) => void
  taskId?: string
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
    const answer = received.toString('utf8', headEnd + 4, headEnd + 4 + length)
    if (pending.taskId === undefined) pending.resolve(new Response(answer, { status, headers: { 'content-type': 'application/json' } }))
    else pending.resolve(contractAnswer(answer, status, pending.taskId, 'bench-http-agent'))
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

async function contractTask(request: Request): Promise<Response> {
  const token = request.headers.get('authorization')?.slice(7) ?? ''
  if (!grants.has(Bun.SHA256.hash(token, 'base64'))) return new Response('{"error":"unauthorized"}', { status: 401 })
  const text = await request.text()
  const task = JSON.parse(text) as { region?: unknown }
  if (typeof task.region !== 'string') return new Response('{"error":"bad"}', { status: 400 })
  const payloadStart = text.indexOf('"payload":') + 10
  const payload = text.slice(payloadStart, text.lastIndexOf('}'))
  const taskId = `t${++contractSequence}`
  if (task.region === values['ws-region']) return contractWsTask(payload, taskId)
  const { promise, resolve } = Promise.withResolvers<Response>()
  const socket =
    idle.pop() ?? (await Bun.connect<Pending | undefined>({ hostname: '127.0.0.1', port: agentPort, socket: agentSocketHandlers, data: undefined }))
  socket.data = { resolve, taskId }
  socket.write(`${contractHeadStart}${taskId}\r\ncontent-length: ${Buffer.byteLength(payload)}\r\n\r\n${payload}`)
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

/**
 * The contract on the WebSocket path, contractTask's checks done: only the payload sent in the task
 * message, the agent's message parsed (every answer from an agent is validated) and its response passed
 * on as text, with the headers a Moonlight answer carries.
 */
async function contractWsTask(payload: string, taskId: string): Promise<Response> {
  return contractAnswer(await toWsAgent(payload), 200, taskId, 'bench-ws-agent')
}

/** The answer with the headers a Moonlight answer carries (task id, node, attempts, nosniff, sandbox). */
function contractAnswer(body: string, status: number, taskId: string, node: string): Response {
  return new Response(body, {
    status,
    headers: {
      'content-type': 'application/json',
      'x-content-type-options': 'nosniff',
      'content-security-policy': 'sandbox',
      'x-task-id': taskId,
      'x-moonlight-node': node,
      'x-moonlight-attempts': '1',
    },
  })
}

const server = Bun.serve({
  hostname: '127.0.0.1',
  port: 0,
  routes: {
    '/ws': (request, server) => (server.upgrade(request) ? undefined : new Response('upgrade failed', { status: 400 })),
    '/task/request': {
      POST: async (request) => {
        if (contract) return contractTask(request)
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
      // The contract validates what an agent sends: the message is parsed, though only its text is passed on.
      if (contract) JSON.parse(text)
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
