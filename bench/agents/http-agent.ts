/**
 * The trivial HTTP agent every HTTP-path measurement shares: answers any POST with a small JSON
 * body. With --server it also registers with Moonlight by heartbeat and keeps the registration fresh.
 *
 *   bun bench/agents/http-agent.ts [--server URL ... --token T --region R --node-id ID]
 */
import { parseArgs } from 'node:util'

const { values } = parseArgs({
  options: {
    /** Moonlight to register with; may be given more than once. */
    server: { type: 'string', multiple: true, default: [] },
    token: { type: 'string', default: '' },
    region: { type: 'string', default: 'us-east-1' },
    'node-id': { type: 'string', default: 'bench-http-1' },
  },
})

const ANSWER = '{"ok":true,"work":"done"}'
const HEARTBEAT_EVERY_MS = 20_000

const agent = Bun.serve({
  hostname: '127.0.0.1',
  port: 0,
  async fetch(request) {
    // Read the body, as a real agent would, but do no work on it.
    await request.arrayBuffer()
    return new Response(ANSWER, { headers: { 'content-type': 'application/json' } })
  },
})

async function heartbeat(server: string): Promise<void> {
  const response = await fetch(`${server}/client/heartbeat`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ip: '127.0.0.1', node_id: values['node-id'], token: values.token, region: values.region, port: agent.port }),
  })
  if (response.status !== 200) throw new Error(`heartbeat refused: ${response.status} ${await response.text()}`)
}

for (const server of values.server) {
  await heartbeat(server)
  setInterval(() => void heartbeat(server).catch((error) => console.error(String(error))), HEARTBEAT_EVERY_MS)
}
console.log(`agent listening on ${agent.port}`)
