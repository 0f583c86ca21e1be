/**
 * Many WebSocket agents in one process, each its own connection: they register, then answer every
 * task at once with a small JSON response. Prints "registered N in MS ms" when all have registered.
 *
 *   bun bench/agents/ws-agents.ts --url ws://127.0.0.1:P/ws --token T --count N [--region R --prefix P]
 */
import { parseArgs } from 'node:util'

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    token: { type: 'string', default: '' },
    count: { type: 'string', default: '1' },
    region: { type: 'string', default: 'eu-west-1' },
    prefix: { type: 'string', default: 'bench-ws' },
    /** Connections opening at once; more would overflow the server's accept backlog. */
    parallel: { type: 'string', default: '256' },
  },
})
if (!values.url) throw new Error('--url is required')
const url = values.url
const count = Number(values.count)
const parallel = Number(values.parallel)

const ANSWER_HEAD = '{"type":"task_response","payload":{"task_id":'
const ANSWER_TAIL = ',"response":{"ok":true,"work":"done"}}}'
const sockets: WebSocket[] = []

/** Opens one agent's socket and resolves once the server confirms its registration. */
function startAgent(index: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url)
    sockets.push(socket)
    let registered = false
    socket.addEventListener('open', () => {
      socket.send(JSON.stringify({ type: 'register', payload: { node_id: `${values.prefix}-${index}`, token: values.token, region: values.region, port: 1 } }))
    })
    socket.addEventListener('message', (event) => {
      const text = String(event.data)
      if (!registered) {
        if (text.includes('"registered"')) {
          registered = true
          resolve()
        } else reject(new Error(`agent ${index}: ${text}`))
        return
      }
      // The trivial work: find the task id and answer; the payload itself is not looked at.
      const message = JSON.parse(text) as { type: string; task_id?: string }
      if (message.type === 'task') socket.send(ANSWER_HEAD + JSON.stringify(message.task_id) + ANSWER_TAIL)
    })
    socket.addEventListener('close', (event) => {
      if (!registered) reject(new Error(`agent ${index} closed before registering: ${event.code} ${event.reason}`))
    })
    socket.addEventListener('error', () => {
      if (!registered) reject(new Error(`agent ${index} could not connect`))
    })
  })
}

const started = performance.now()
let next = 0
async function lane(): Promise<void> {
  while (next < count) await startAgent(next++)
}
await Promise.all(Array.from({ length: Math.min(parallel, count) }, lane))
console.log(`registered ${count} in ${(performance.now() - started).toFixed(1)} ms`)
process.on('SIGTERM', () => {
  for (const socket of sockets) socket.close(1000)
  process.exit(0)
})
