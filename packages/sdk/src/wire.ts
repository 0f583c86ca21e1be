/**
 * The messages the SDK exchanges with a Moonlight server, as TypeScript types. The server's zod
 * schemas (src/wire/ in the Moonlight repository) are the source of truth; this package carries no
 * runtime dependency, so it keeps plain types, and a type test there checks the two agree.
 */

/** `{ error, code, ...details }`: every error the server answers itself. */
export interface ErrorBody {
  error: string
  code: string
  [detail: string]: unknown
}

/** Routing fields of one task (`POST /task/request`); absent, the server's defaults apply. */
export interface RoutingOptions {
  /** Sticky routing: the same key goes to the same agent while it is eligible. */
  key?: string
  /** Exactly this agent, no balancing. */
  node_id?: string
  /** May the task leave its region when nobody there can take it? */
  fallback?: 'parent' | 'none'
  /** false: one attempt only. */
  retry?: boolean
  /**
   * The attempt failures the task may be retried after, narrower than the server's routing.retry_on:
   * `unreachable` (the agent never got it), `lost` (sent, no usable answer: it may have run), `status`
   * (a 5xx). `['unreachable']`: the task is never sent twice.
   */
  retry_on?: Array<'unreachable' | 'lost' | 'status'>
  /** Seconds; gives up sooner than the server's task_timeout. */
  timeout?: number
  /** Its class in the server's queue when every agent of its pool is full: high before normal before low. */
  priority?: 'high' | 'normal' | 'low'
  /** Seconds it may wait there for a slot (default the server's queue.timeout); past it, 503 queue_timeout. */
  queue_timeout?: number
}

export type TaskState = 'queued' | 'running' | 'done' | 'failed' | 'cancelled'

/** `202` to an async submit. */
export interface AcceptedTask {
  task_id: string
  state: TaskState
  status_url: string
}

/** `GET /task/{id}`: a stored task. */
export interface TaskView {
  task_id: string
  state: TaskState
  mode: 'async' | 'single'
  region: string
  node_id: string | null
  attempts: Array<{ node_id: string; status?: number; kind?: string; reason?: string }>
  submitted_at: string
  finished_at: string | null
  /** The W3C trace the task belongs to, when the caller sent one or the server's tracing started one. */
  trace_id?: string
  status?: number
  headers?: Record<string, string>
  response?: unknown
  error?: unknown
}

/** What one agent answered to a broadcast. */
export interface BroadcastResult {
  node_id: string
  protocol: 'http' | 'ws'
  status: number
  response?: unknown
  error?: string
  kind?: string
}

/** The answer to a broadcast: every agent's result. */
export interface BroadcastReply {
  task_id: string
  region: string
  targets: number
  answered: number
  results: BroadcastResult[]
}

/** What a WebSocket agent receives. */
export type AgentInbound =
  | {
      type: 'registered'
      /** max_in_flight: its slots as the server counts them; absent, none. */
      payload: { node_id: string; region: string; weight: number; heartbeat_interval: number; server_time: string; max_in_flight?: number }
    }
  | { type: 'heartbeat_ack'; payload: { server_time: string; max_in_flight?: number } }
  | { type: 'task'; task_id: string; traceparent?: string; tracestate?: string; payload?: unknown }
  | { type: 'cancel'; task_id: string }
  | { type: 'error'; payload: { message: string; code: string } }

/** The server's answer to an HTTP agent's heartbeat. */
export interface HeartbeatReply {
  status: 'ok'
  server_time: string
  node_id: string
  region: string
  weight: number
  client_ttl: number
}

/** An HTTP agent's "don't retry this 5xx elsewhere" (the WebSocket task_response's `retry: false`). */
export const NO_RETRY_HEADER = 'x-moonlight-retry'
