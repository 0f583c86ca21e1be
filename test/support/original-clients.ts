/**
 * Clients written the way the original Moonlight's example clients are, unmodified by anything this
 * server adds: what users migrating from it run. Each keeps the habits that matter here — the
 * "robust" WebSocket client parses the task payload as a JSON string and answers with a JSON string;
 * the HTTP client heartbeats on a fixed interval, ignores failures and echoes /work.
 */
import { TOKEN } from './helpers.ts'

export interface OriginalWsClient {
  /** Payloads as the client parsed them; a payload it could not parse is recorded as an Error. */
  parsed: Array<unknown>
  /** Every message from the server, parsed. */
  messages: Array<{ type: string; [key: string]: unknown }>
  registered: Promise<void>
  closed: Promise<number>
  close: () => void
}

/**
 * The original's robust WebSocket client: registers on open (the token in `register` unless
 * `token` is null), `JSON.parse(message.payload)` on every task, answers `JSON.stringify(...)`
 * with `Content-Type: application/json`, and a 500 with the parse error when the payload was not a string.
 */
export function startOriginalWsClient(url: string, options: { nodeId: string; region: string; token?: string | null }): OriginalWsClient {
  const socket = new WebSocket(url)
  const parsed: unknown[] = []
  const messages: OriginalWsClient['messages'] = []
  let onRegistered: () => void = () => {}
  let onRefused: (error: Error) => void = () => {}
  const registered = new Promise<void>((resolve, reject) => {
    onRegistered = resolve
    onRefused = reject
  })
  const closed = new Promise<number>((resolve) => socket.addEventListener('close', (event) => resolve(event.code)))
  void closed.then((code) => onRefused(new Error(`closed with ${code} before registering: ${JSON.stringify(messages)}`)))
  socket.addEventListener('open', () => {
    const token = options.token === undefined ? TOKEN : options.token
    socket.send(
      JSON.stringify({
        type: 'register',
        payload: { ip: '192.168.1.100', node_id: options.nodeId, ...(token === null ? {} : { token }), region: options.region, port: 3000 },
      }),
    )
  })
  socket.addEventListener('message', (event) => {
    const message = JSON.parse(String(event.data))
    messages.push(message)
    if (message.type === 'registered') onRegistered()
    if (message.type !== 'task') return
    let reply: { response: string; status: number }
    try {
      const taskData = JSON.parse(message.payload)
      parsed.push(taskData)
      reply = { response: JSON.stringify({ processed: true, original: taskData }), status: 200 }
    } catch (error) {
      parsed.push(error)
      reply = { response: JSON.stringify({ error: (error as Error).message }), status: 500 }
    }
    socket.send(
      JSON.stringify({
        type: 'task_response',
        payload: { task_id: message.task_id, ...reply, headers: { 'Content-Type': 'application/json' } },
      }),
    )
  })
  return { parsed, messages, registered, closed, close: () => socket.close(1000) }
}

export interface OriginalHttpClient {
  port: number
  /** The status of every heartbeat sent so far. */
  statuses: number[]
  /** Bodies /work received. */
  received: string[]
  stop: () => void
}

/**
 * The original's HTTP client: serves /work (echoing the body), heartbeats every `intervalMs` with
 * `{ip, node_id, token, region, port}` in the body and only logs a refusal. Its node id defaults to
 * the host name, so two machines cloned from one image share it.
 */
export function startOriginalHttpClient(serverUrl: string, options: { nodeId: string; region: string; intervalMs: number }): OriginalHttpClient {
  const received: string[] = []
  const statuses: number[] = []
  const work = Bun.serve({
    port: 0,
    hostname: '127.0.0.1',
    fetch: async (request) => {
      const body = await request.text()
      received.push(body)
      return new Response(body, { headers: { 'content-type': 'application/json' } })
    },
  })
  const port = work.port ?? 0
  const heartbeat = async () => {
    const response = await fetch(`${serverUrl}/client/heartbeat`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ip: '127.0.0.1', node_id: options.nodeId, token: TOKEN, region: options.region, port }),
    }).catch(() => undefined)
    statuses.push(response?.status ?? 0)
    await response?.text()
  }
  void heartbeat()
  const timer = setInterval(heartbeat, options.intervalMs)
  return {
    port,
    statuses,
    received,
    stop: () => {
      clearInterval(timer)
      work.stop(true)
    },
  }
}
