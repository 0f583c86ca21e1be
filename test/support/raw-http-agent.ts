/**
 * A raw TCP HTTP agent for hostile tests of the server's own HTTP/1.1 client: registered by heartbeat
 * at 127.0.0.1, it hands each whole request (head and declared body) to a test's `reply`, which writes
 * whatever bytes it likes; and the agent pools' figures from /metrics, to check nothing was left busy.
 */
import { expect } from 'bun:test'
import type { Socket } from 'bun'
import { metricValue, TOKEN, waitFor } from './helpers.ts'

export interface AgentRequest {
  head: string
  body: string
  taskId: string
}

export interface RawSocket {
  buffered: string
  id: number
}

export type Reply = (socket: Socket<RawSocket>, request: AgentRequest, connection: number) => void

/** Registers (or refreshes) an HTTP agent at 127.0.0.1:`port` by heartbeat. */
export async function heartbeat(url: string, nodeId: string, port: number, region = 'usa'): Promise<void> {
  const response = await fetch(`${url}/client/heartbeat`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ip: '127.0.0.1', node_id: nodeId, token: TOKEN, region, port }),
  })
  expect(response.status).toBe(200)
}

/** rawAgent for a test scope: its listeners stop with the test (`defer`). */
export function rawHttpAgents(defer: (cleanup: () => unknown) => void) {
  return async function rawAgent(url: string, reply: Reply, nodeId = 'raw', region = 'usa') {
    let connections = 0
    const requests: AgentRequest[] = []
    const listener = Bun.listen<RawSocket>({
      hostname: '127.0.0.1',
      port: 0,
      socket: {
        open(socket) {
          socket.data = { buffered: '', id: ++connections }
        },
        data(socket, data) {
          socket.data.buffered += data.toString('latin1')
          for (;;) {
            const end = socket.data.buffered.indexOf('\r\n\r\n')
            if (end === -1) return
            const head = socket.data.buffered.slice(0, end)
            const length = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0)
            if (socket.data.buffered.length < end + 4 + length) return
            const request = { head, body: socket.data.buffered.slice(end + 4, end + 4 + length), taskId: /x-task-id: (\S+)/i.exec(head)?.[1] ?? '' }
            socket.data.buffered = socket.data.buffered.slice(end + 4 + length)
            requests.push(request)
            reply(socket, request, socket.data.id)
          }
        },
      },
    })
    defer(() => listener.stop(true))
    await heartbeat(url, nodeId, listener.port, region)
    return { connections: () => connections, requests }
  }
}

/** The HTTP agent pools' figures as GET /metrics reports them. */
export async function poolFigures(url: string): Promise<{ open: number; busy: number; queued: number }> {
  // One text for all three: figures read at different moments could show a call neither busy nor queued.
  const text = await (await fetch(`${url}/metrics`)).text()
  return {
    open: metricValue(text, 'moonlight_http_agent_connections{state="open"}'),
    busy: metricValue(text, 'moonlight_http_agent_connections{state="busy"}'),
    queued: metricValue(text, 'moonlight_http_agent_calls_queued'),
  }
}

/** Every call to the agents over: nothing busy and nothing waiting (a slot never freed would stay busy). */
export async function expectPoolsSettled(url: string): Promise<void> {
  await waitFor(async () => {
    const figures = await poolFigures(url)
    return figures.busy === 0 && figures.queued === 0
  }, 'the HTTP agent pools to have nothing busy or queued')
}
