import type { WebSocketLike } from './agent.ts'
import type { AgentInbound } from './wire.ts'

/** The WebSocket readyState of an open connection (the same number in every implementation). */
export const OPEN = 1

type WebSocketClass = new (url: string) => WebSocketLike

let wsPackage: Promise<WebSocketClass> | undefined

/**
 * The global WebSocket (Bun, Deno, Node 22+), else the `ws` package (Node 20), imported only when
 * needed so the SDK has no dependency of its own.
 */
export async function openWebSocket(url: string): Promise<WebSocketLike> {
  const global = (globalThis as { WebSocket?: WebSocketClass }).WebSocket
  if (global) return new global(url)
  wsPackage ??= importWsPackage()
  return new (await wsPackage)(url)
}

async function importWsPackage(): Promise<WebSocketClass> {
  // A variable specifier: bundlers and tsc leave an optional peer alone.
  const name = 'ws'
  try {
    const module = (await import(name)) as { WebSocket?: WebSocketClass; default?: WebSocketClass }
    const found = module.WebSocket ?? module.default
    if (found) return found
  } catch {
    // Reported below with what to do.
  }
  throw new Error('no WebSocket here: use Node 22 or later, run Node 20 with --experimental-websocket, install the "ws" package, or pass protocol: "http"')
}

/**
 * A message from the server, checked by hand (the server's zod schema, without zod): undefined
 * with the reason when it is not one the agent knows.
 */
export function parseInbound(text: string): AgentInbound | string {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return 'not JSON'
  }
  if (!isObject(value) || typeof value.type !== 'string') return 'no "type"'
  const { payload } = value
  switch (value.type) {
    case 'registered':
      if (isObject(payload) && typeof payload.node_id === 'string' && typeof payload.heartbeat_interval === 'number' && payload.heartbeat_interval > 0)
        return value as AgentInbound
      return 'a "registered" without node_id and heartbeat_interval'
    case 'heartbeat_ack':
      return value as AgentInbound
    case 'task':
    case 'cancel':
      if (typeof value.task_id === 'string' && value.task_id !== '') return value as AgentInbound
      return `a "${value.type}" without task_id`
    case 'error':
      if (isObject(payload) && typeof payload.message === 'string') return value as AgentInbound
      return 'an "error" without message'
    default:
      return `unknown type "${value.type}"`
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}
