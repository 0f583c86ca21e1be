/**
 * The floor for any proxy written on Bun: the least a relay can do per task, with none of
 * Moonlight's work (no auth, validation, balancing, retries, timeouts or stats). POST /task/request
 * forwards the body's payload to one agent: over fetch to --agent-port's /work, or over the one
 * WebSocket agent connected to /ws when the body's region is the WebSocket one. Measured beside
 * Moonlight (`--floor`), it separates what Moonlight costs from what the platform costs.
 *
 *   bun bench/agents/bun-relay.ts --agent-port N --ws-region R
 */

import { parseArgs } from 'node:util'
import type { ServerWebSocket } from 'bun'

const { values } = parseArgs({ options: { 'agent-port': { type: 'string' }, 'ws-region': { type: 'string', default: 'eu-west-1' } } })
const workUrl = `http://127.0.0.1:${values['agent-port']}/work`
const waiting = new Map<string, (answer: string) => void>()
let agentSocket: ServerWebSocket<undefined> | undefined
let sequence = 0

const server = Bun.serve({
  hostname: '127.0.0.1',
  port: 0,
  routes: {
    '/ws': (request, server) => (server.upgrade(request) ? undefined : new Response('upgrade failed', { status: 400 })),
    '/task/request': {
      POST: async (request) => {
        const { region, payload } = (await request.json()) as { region: string; payload: unknown }
        if (region !== values['ws-region']) {
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
