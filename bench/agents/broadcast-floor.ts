/**
 * The floor of a broadcast on Bun: a bare server that registers WebSocket agents (any `register`
 * is answered `registered`, every socket joins one topic), and for POST /broadcast publishes one task
 * frame to the topic, parses each `task_response` (JSON.parse, as any proxy must to know whose
 * answer it is) and answers once all have, with their answers joined. No auth, no validation, no
 * health, no stats: what a broadcast to N sockets costs the platform, measured beside Moonlight's.
 *
 *   bun bench/agents/broadcast-floor.ts --port P
 */
import { parseArgs } from 'node:util'

const { values } = parseArgs({ options: { port: { type: 'string', default: '0' } } })
const TOPIC = 'agents'
let sockets = 0
let pending: { expected: number; answers: string[]; done: (body: string) => void; taskId: string } | undefined
let next = 0

const server = Bun.serve({
  port: Number(values.port),
  hostname: '127.0.0.1',
  fetch(request, srv) {
    const path = new URL(request.url).pathname
    if (path === '/ws') return srv.upgrade(request) ? undefined : new Response('no upgrade', { status: 400 })
    if (path === '/broadcast' && request.method === 'POST') {
      const taskId = `b${++next}`
      return new Promise<Response>((resolve) => {
        pending = { expected: sockets, answers: [], taskId, done: (body) => resolve(new Response(body, { headers: { 'content-type': 'application/json' } })) }
        srv.publish(TOPIC, `{"type":"task","task_id":"${taskId}","payload":{"job":"refresh-cache","key":"config"}}`)
      })
    }
    return new Response('not found', { status: 404 })
  },
  websocket: {
    message(ws, text) {
      const message = JSON.parse(String(text)) as { type: string; payload?: { task_id?: string; response?: unknown } }
      if (message.type === 'register') {
        ws.subscribe(TOPIC)
        sockets++
        ws.send('{"type":"registered","payload":{}}')
        return
      }
      if (message.type !== 'task_response' || !pending || message.payload?.task_id !== pending.taskId) return
      pending.answers.push(JSON.stringify(message.payload.response))
      if (pending.answers.length === pending.expected) {
        const { answers, done } = pending
        pending = undefined
        done(`{"answered":${answers.length},"results":[${answers.join(',')}]}`)
      }
    },
    close() {
      sockets--
    },
  },
})
console.log(`listening on ${server.port}`)
