import { z } from 'zod'
import { attemptFailureSchema } from './errors.ts'
import { healthStateSchema, protocolSchema } from './names.ts'

/** Another live agent claims this client's node id (and is refused): until it stops, for two client_ttl. */
export const nodeConflictViewSchema = z.object({
  /** Where the refused agent is: ip:port for an HTTP agent, the source address for a WebSocket one. */
  other_address: z.string(),
  since: z.string(),
  last_at: z.string(),
  /** Refused claims so far. */
  count: z.number().int(),
})
export type NodeConflictView = z.infer<typeof nodeConflictViewSchema>

/** One client as `GET /clients`, the monitor feed and `moonlight clients` show it. */
export const clientViewSchema = z.object({
  node_id: z.string(),
  /** In cluster mode, the instance that holds the client (its WebSocket, or its heartbeats). */
  instance: z.string().optional(),
  /** In cluster mode, for a client another instance holds: that instance's verdict on its health (`state` is this one's). */
  holder_state: healthStateSchema.optional(),
  region: z.string(),
  protocol: protocolSchema,
  /** An HTTP client: the address the server calls; a WebSocket client: its socket's source address. */
  ip: z.string(),
  /** The port of an HTTP client's /work; null for a WebSocket client, which is called over its socket. */
  port: z.number().int().nullable(),
  weight: z.number(),
  /** Only while the client ramps up after a join or an ejection (health.slow_start): weight times the ramp's factor, 10 % to 100 %. */
  effective_weight: z.number().optional(),
  state: healthStateSchema,
  draining: z.boolean(),
  /** Drained by an operator (POST /clients/{node_id}/drain) rather than by its own weight 0; undrain gives it its weight back. */
  drained_by_operator: z.literal(true).optional(),
  registered_at: z.string(),
  last_seen: z.string(),
  in_flight: z.number().int(),
  /** Its slots, when it announced them: in_flight never passes it. */
  max_in_flight: z.number().int().optional(),
  successes: z.number().int(),
  failures: z.number().int(),
  consecutive_failures: z.number().int(),
  latency_ms: z.number(),
  ejected_until: z.string().nullable(),
  conflict: nodeConflictViewSchema.optional(),
})
export type ClientView = z.infer<typeof clientViewSchema>

/** `GET /clients`. */
export const clientListSchema = z.object({ clients: z.array(clientViewSchema) })
export type ClientList = z.infer<typeof clientListSchema>

/** Per region where clients registered: how many, how many can take tasks now, and how many of those are failing (kept only so the region is not left empty). */
export const regionCountsSchema = z.object({ clients: z.number().int(), active: z.number().int(), failing: z.number().int() })
export type RegionCounts = z.infer<typeof regionCountsSchema>

/** `GET /status`: public, counts only, no addresses. */
export const statusSchema = z.object({
  server: z.enum(['Online', 'Stopping']),
  websocket: z.enum(['Connected', 'Disabled']),
  clients: z.number().int(),
  /** Tasks in flight. */
  tasks: z.number().int(),
  regions: z.record(z.string(), regionCountsSchema),
  version: z.string(),
  uptime_s: z.number(),
  started_at: z.string(),
  tasks_total: z.number().int(),
  tasks_failed: z.number().int(),
  websocket_connections: z.number().int(),
  /** `alone` without a cluster; in one, `ok` while Redis is reachable, `degraded` while it is not. */
  cluster: z.enum(['alone', 'ok', 'degraded']),
  instance_id: z.string(),
  /** The slot queue and the retry budget: tasks waiting for a slot now, tasks shed by reason, retries refused. */
  queue: z.object({ depth: z.number().int(), shed: z.record(z.string(), z.number().int()), retries_refused: z.number().int() }).optional(),
})
export type Status = z.infer<typeof statusSchema>

/** `GET /cluster`: every instance of the cluster, this one included. */
export const clusterViewSchema = z.object({
  mode: z.enum(['alone', 'cluster']),
  instance_id: z.string(),
  redis: z.enum(['up', 'down']).nullable(),
  redis_url: z.string().nullable(),
  instances: z.array(
    z.object({
      instance_id: z.string(),
      advertise_url: z.string(),
      started_at: z.string(),
      clients: z.number().int(),
      in_flight: z.number().int(),
      refreshed_at: z.string(),
      self: z.boolean(),
    }),
  ),
})
export type ClusterView = z.infer<typeof clusterViewSchema>

/** A region of `GET /regions`, with the clients at it and under it. */
export interface RegionNode extends RegionCounts {
  region: string
  total: number
  total_active: number
  children: RegionNode[]
}
export const regionNodeSchema: z.ZodType<RegionNode> = z.object({
  region: z.string(),
  clients: z.number().int(),
  active: z.number().int(),
  failing: z.number().int(),
  total: z.number().int(),
  total_active: z.number().int(),
  get children() {
    return z.array(regionNodeSchema)
  },
})

/** A finished task as the dashboard's recent list and feed show it. */
export const taskViewSchema = z.object({
  task_id: z.string(),
  region: z.string(),
  mode: z.enum(['single', 'broadcast']),
  /** The node that answered, or the last one tried. */
  node_id: z.string().nullable(),
  /** The HTTP status the caller got. */
  status: z.number().int(),
  outcome: z.enum(['ok', 'failed', 'timeout', 'no_client']),
  attempts: z.number().int(),
  latency_ms: z.number(),
  at: z.string(),
})
export type TaskView = z.infer<typeof taskViewSchema>

/** One attempt of a task, as a client's detail shows it. */
export const attemptViewSchema = z.object({
  node_id: z.string(),
  /** The agent's HTTP status, when it answered. */
  status: z.number().int().optional(),
  /** How the attempt failed, when it did (unreachable, timeout, status for a 5xx, …). */
  kind: attemptFailureSchema.optional(),
  ms: z.number(),
})

/** A task in a client's detail: the task, and every attempt it made, on this client and others. */
export const clientTaskViewSchema = taskViewSchema.extend({ tries: z.array(attemptViewSchema) })
export type ClientTaskView = z.infer<typeof clientTaskViewSchema>

/** `GET /clients/{node_id}`: the client and its recent tasks (the ones this instance ran), newest first. */
export const clientDetailSchema = z.object({ client: clientViewSchema, tasks: z.array(clientTaskViewSchema) })
export type ClientDetail = z.infer<typeof clientDetailSchema>

/** What an operator action answers (drain, undrain, eject): the client as it is now. */
export const clientActionReplySchema = z.object({ client: clientViewSchema })
export type ClientActionReply = z.infer<typeof clientActionReplySchema>

/** `DELETE /clients/{node_id}`: the node forgotten. */
export const forgottenClientSchema = z.object({ forgotten: z.string() })

/** `POST /clients/{node_id}/eject`: how long, in seconds; health.ejection when absent. */
export const ejectRequestSchema = z.strictObject({ seconds: z.number().positive().max(86_400).optional() })

/** `GET /healthz`: the process is up. */
export const healthzSchema = z.object({ ok: z.literal(true) })

/** `GET /readyz`: the server may take traffic (a 503 `not_ready` says why not). */
export const readyzSchema = z.object({ ready: z.literal(true) })
