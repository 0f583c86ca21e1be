import { isUtf8 } from 'node:buffer'
import { closeSync, constants, fstatSync, openSync, readSync, statSync } from 'node:fs'
import { homedir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { z } from 'zod'
import { ROOT_REGION } from '../fleet/regions.ts'
import { findRegrant } from '../security/access.ts'
import { PRIVATE_NETWORKS, parseCidr } from '../security/networks.ts'
import { nameSchema, payloadFormatSchema, RESERVED_NAME, reservedNameMessage } from '../wire/names.ts'
import { fallbackSchema, RETRY_ON_ALL, retryOnListSchema } from '../wire/task.ts'
import { duplicateKeyIn, syntaxErrorAt, type TextPosition } from './json-syntax.ts'
import { nearestName } from './near-name.ts'

const seconds = z.number().positive()

/** The hierarchy from the user's own example config; the embedded default uses it. */
export const SEED_HIERARCHY: Record<string, string> = {
  'us-east-1': 'usa',
  'us-west-1': 'usa',
  'eu-west-1': 'europe',
  'ap-southeast-1': 'singapore',
  usa: 'northamerica',
  europe: 'emea',
  singapore: 'asia',
  northamerica: 'global',
  emea: 'global',
  asia: 'global',
}

const wsSchema = z
  .object({
    enabled: z.boolean().default(true).describe('The WebSocket endpoint for agents and the dashboard; applies at the next start.'),
    path: z.string().startsWith('/', 'must start with "/"').default('/ws').describe('Where it listens; applies at the next start.'),
    max_connections: z.number().int().positive().default(1000).describe('Further upgrades get `503 too_many_connections`.'),
    read_timeout: seconds.default(300).describe('A socket silent this long (no message, no pong) is dropped and its tasks fail over.'),
    write_timeout: seconds.default(30).describe('A socket that does not read what we send for this long is dropped (backpressure).'),
    heartbeat_interval: seconds.default(30).describe('How often the server pings every socket.'),
    connection_check_interval: seconds.default(60).describe('How often silent sockets are swept.'),
    allowed_origins: z
      .array(z.string().regex(/^https?:\/\/[^/\s]+$/, 'must be an origin such as https://ops.example.com'))
      .default([])
      .describe(
        "Origins besides the server's own whose pages may open the WebSocket, for a dashboard served elsewhere (see [WebSocket Origin](security.md#websocket-origin)).",
      ),
    // Pongs alone do not count: they would keep a squatter's socket alive.
    register_timeout: seconds
      .default(10)
      .describe(
        'A socket that has not sent an accepted `register` (or `monitor`) by then gets `{"type":"error","payload":{"message":"…","code":"register_timeout"}}` and is closed with 1008; pongs do not count. Checked once a second.',
      ),
    payload_format: payloadFormatSchema
      .default('object')
      .describe(
        "How a WebSocket agent whose `register` names no `payload_format` gets a task's payload: `object`, the JSON value itself; `string`, its JSON text as a JSON string, for the original Moonlight's clients that `JSON.parse(message.payload)` (see [Coming from the original Moonlight](migrating.md)). Applies to agents registering after a reload.",
      ),
    // The rest of max_connections is kept for registered agents; absent, maxUnregisteredFor(max_connections).
    max_unregistered: z
      .number()
      .int()
      .positive()
      .optional()
      .describe(
        'Sockets not registered yet, at most; further upgrades get `503 too_many_unregistered`. Default: a tenth of `ws.max_connections`, at least 1. Must be below `ws.max_connections` (1 if that is 1), so registered agents always find room.',
      ),
  })
  .superRefine((ws, ctx) => {
    if (ws.max_unregistered === undefined || ws.max_unregistered <= unregisteredCeiling(ws.max_connections)) return
    const message =
      ws.max_connections === 1
        ? 'must be 1 when ws.max_connections is 1'
        : `must be below ws.max_connections (${ws.max_connections}), so that registered agents always find room`
    ctx.addIssue({ code: 'custom', path: ['max_unregistered'], message })
  })
  .transform((ws) => ({ ...ws, max_unregistered: ws.max_unregistered ?? maxUnregisteredFor(ws.max_connections) }))

/**
 * Below max_connections, so a socket flood cannot take every slot; but with a single connection that one
 * must be allowed, since every agent is unregistered until its `register` arrives.
 */
function unregisteredCeiling(maxConnections: number): number {
  return Math.max(1, maxConnections - 1)
}

/** The default ws.max_unregistered: a tenth of max_connections, at least 1, within the ceiling. */
function maxUnregisteredFor(maxConnections: number): number {
  return Math.min(Math.max(1, Math.floor(maxConnections / 10)), unregisteredCeiling(maxConnections))
}

const htmlSchema = z.object({
  enabled: z.boolean().default(true).describe('`false` removes the docs page, the dashboard and their assets; the API stays.'),
  static_path: z.string().startsWith('/', 'must start with "/"').default('/static').describe("The pages' assets."),
  index_path: z.string().startsWith('/', 'must start with "/"').default('/').describe('The docs page (see [Docs page and dashboard](dashboard.md)).'),
  dashboard_path: z.string().startsWith('/', 'must start with "/"').default('/dashboard').describe('The live dashboard.'),
})

const healthSchema = z.object({
  failures_to_eject: z.number().int().positive().default(3).describe('Consecutive failures (refused, reset, 5xx, timeout) that eject a client.'),
  ejection_time: seconds.default(30).describe("The first ejection's back-off; each further ejection doubles it…"),
  max_ejection_time: seconds.default(300).describe('…up to this; a client healthy for this long starts over.'),
  max_ejected_percent: z
    .number()
    .min(0)
    .max(100)
    .default(50)
    .describe('Never eject more than this share of the clients a task draws from at once (see [Routing, health and failover](routing.md)).'),
  slow_start: z
    .number()
    .min(0)
    .max(3600)
    .default(0)
    .describe('Seconds over which a client that joins or returns from ejection ramps from 10 % to 100 % of its weight; 0: off, at once.'),
})

/** Tasks waiting for an agent's slot when every agent of their pool is full (docs/routing.md "Slots, the queue…"). */
const queueSchema = z.object({
  timeout: seconds
    .default(10)
    .describe(
      "Seconds a task may wait for a slot (a task's own `queue_timeout` may say otherwise); time queued counts against the task's own deadline. Past it, `503 queue_timeout` with `Retry-After: 1`.",
    ),
  max: z
    .number()
    .int()
    .min(0)
    .max(1_000_000)
    .default(1000)
    .describe(
      "Tasks that may wait in one pool's queue, and in one agent's own queue (tasks naming it with `node_id`); past it, `503 queue_full` with `Retry-After: 1`.",
    ),
  promote_after: seconds
    .default(5)
    .describe(
      'Seconds of waiting that count as one priority class up, so a low task is never passed by high ones that arrived more than 2 × `promote_after` after it.',
    ),
})

/** How tasks find clients (docs/routing.md). */
const routingSchema = z.object({
  fallback: fallbackSchema
    .default('parent')
    .describe(
      'A task\'s `fallback` when it gives none: `"parent"` climbs the hierarchy when a region has no candidate, `"none"` keeps tasks at or under their region ([Per-task routing](routing.md#per-task-routing)).',
    ),
  balance: z
    .enum(['round_robin', 'least_request'])
    .default('round_robin')
    .describe(
      '`round_robin`: smooth weighted round-robin; `least_request`: of two clients drawn at random, the one with fewer tasks in flight per unit of weight, which favours fast agents ([Slots, the queue, least-request and the retry budget](routing.md#slots-the-queue-least-request-and-the-retry-budget)).',
    ),
  // Envoy's defaults: a failing region sees about 1.2 × its tasks instead of retry_count + 1 times them.
  retry_budget: z
    .object({
      percent: z
        .number()
        .min(0)
        .max(100)
        .default(20)
        .describe(
          "Retries at once in a region pool after a 5xx answer (failover after an unreachable or lost agent is not counted), at most this share of the pool's tasks in flight…",
        ),
      min: z
        .number()
        .int()
        .min(0)
        .default(3)
        .describe('…or this many; a retry the budget refuses ends the task, `502 all_attempts_failed` with `"reason": "retry_budget_exhausted"`.'),
    })
    .prefault({})
    .describe('How many retries a region pool may run at once, so a failing region is not flooded.'),
  retry_on: retryOnListSchema
    .default([...RETRY_ON_ALL])
    .describe(
      "The attempt failures a task may be retried after; a task's `retry_on` may narrow it, never widen it ([Retries and delivery](routing.md#retries-and-delivery)).",
    ),
})

// Region names follow the agents' rule (nameSchema): a region the config names is one an agent can register in.
const hierarchySchema = z
  .unknown()
  // Before the record, which skips a "__proto__" key (JSON.parse makes it an own property) instead of running the key schema on it.
  .superRefine((raw, ctx) => {
    if (typeof raw === 'object' && raw !== null && Object.hasOwn(raw, RESERVED_NAME))
      ctx.addIssue({ code: 'custom', path: [RESERVED_NAME], message: reservedNameMessage })
  })
  .pipe(z.record(nameSchema, nameSchema))
  .default({})
  .superRefine((hierarchy, ctx) => {
    if (Object.hasOwn(hierarchy, ROOT_REGION)) ctx.addIssue({ code: 'custom', path: [ROOT_REGION], message: '"global" is the root and cannot have a parent' })
    const cycle = findCycle(hierarchy)
    if (cycle) ctx.addIssue({ code: 'custom', path: [cycle[0]!], message: `cycle in the hierarchy: ${cycle.join(' -> ')}` })
  })

/**
 * The first cycle met walking up from each region in key order, as the walk that found it
 * (`a -> b -> a`), or undefined. Linear: a walk stops at a region an earlier walk proved reaches the
 * top, so each region is walked over once, even in a chain 50 000 deep (a SIGHUP reload must not stall the server).
 */
function findCycle(hierarchy: Readonly<Record<string, string>>): string[] | undefined {
  // Own properties only: "toString" or "constructor" as a parent is a region name, not a member of Object.prototype.
  const parentOf = (region: string) => (Object.hasOwn(hierarchy, region) ? hierarchy[region] : undefined)
  const reachesTop = new Set<string>()
  for (const start of Object.keys(hierarchy)) {
    const path: string[] = []
    const onPath = new Set<string>()
    for (let region: string | undefined = start; region !== undefined && !reachesTop.has(region); region = parentOf(region)) {
      if (onPath.has(region)) return [...path, region]
      path.push(region)
      onPath.add(region)
    }
    for (const region of path) reachesTop.add(region)
  }
  return undefined
}

const cidrSchema = z.string().refine((text) => parseCidr(text) !== undefined, 'must be an IP address or a CIDR such as 10.0.0.0/8')

/** Several instances as one through Redis (docs/cluster.md). */
const clusterSchema = z.object({
  redis_url: z
    .string()
    .refine((url) => /^rediss?:\/\/[^\s]+$/.test(url) && URL.canParse(url), 'must be a redis:// or rediss:// URL, e.g. redis://127.0.0.1:6379')
    .describe(
      '`redis://host:port`, `redis://:password@host/2` (a database number), `rediss://` for TLS. `MLS_REDIS_URL` and `serve --redis URL` override it. Its password never appears in a log line, `/status`, `/cluster` or an error (`***`).',
    ),
  instance_id: z
    .string()
    .regex(/^[\w.:@-]{1,128}$/, 'only letters, digits and . _ : @ - (at most 128)')
    .optional()
    .describe("This instance's name; default: the host name and the port. A second instance with the same id on the same Redis refuses to start, saying so."),
  key_prefix: z
    .string()
    .regex(/^[\w.:-]{0,64}$/, 'only letters, digits and . _ : - (at most 64)')
    .default('mls:')
    .describe('Every key and channel in Redis starts with it ([what Redis holds](cluster.md)).'),
  instance_ttl: seconds
    .min(1)
    .max(300)
    .default(5)
    .describe('An instance that has not refreshed its presence for this long is dead: the others drop its clients.'),
  command_timeout: seconds
    .min(0.1)
    .max(60)
    .default(2)
    .describe(
      'Seconds Redis has to answer any command; a Redis that hangs (stopped, swapping, stuck) then counts as lost, as a killed one does (degraded, `/readyz` 503).',
    ),
  advertise_url: z.string().url().optional().describe('How operators reach this instance (shown in `/cluster`); default: `http(s)://<host name>:<port>`.'),
  prefer_local: z
    .boolean()
    .default(false)
    .describe('Prefer eligible agents held by the receiving instance (saving the hop through Redis), at the price of exact shares.'),
  relay_batch: z
    .boolean()
    .default(true)
    .describe(
      'Tasks relayed to one instance during one turn of the event loop go through Redis as one message, and their answers back as one, between instances that both have it on (each says so in its presence; older versions get one message per task). Off: one message per task and per answer, and no batch is read.',
    ),
})

/** Where HTTP agents may be called (see src/security/agent-call-address.ts). */
const agentsSchema = z.object({
  allowed_networks: z
    .array(cidrSchema)
    .default(PRIVATE_NETWORKS)
    .describe(
      'Where an HTTP agent may be called besides the address its heartbeat came from; default: the private ranges (see [Where agents may be called](security.md#where-agents-may-be-called)).',
    ),
  ca: z
    .string()
    .min(1)
    .optional()
    .describe(
      "A PEM bundle that HTTPS agents' certificates are verified against, for a private CA; default: the system's CAs. Re-read on SIGHUP (see [HTTPS agents](security.md#https-agents)).",
    ),
})

/** The server's keep-alive connections to HTTP agents (src/transports/http-client/pool.ts). */
const httpAgentsSchema = z.object({
  max_connections: z
    .number()
    .int()
    .positive()
    .default(64)
    .describe(
      'Keep-alive connections to one HTTP agent at most; calls past it wait in order for one (see [Calls to HTTP agents](agents.md#calls-to-http-agents)).',
    ),
  idle_timeout: seconds
    .default(30)
    .describe("Seconds an unused connection to an HTTP agent stays open; sooner when the agent's `Keep-Alive: timeout=N` says so."),
})

/**
 * What is read of a request body over max_body_bytes before its 413, or of one refused before it was read
 * (src/http/oversized-body.ts): enough
 * for clients that write the whole body before reading the answer to get it, bounded so that an
 * endless upload cannot hold a connection.
 */
const oversizedBodySchema = z.object({
  discard_bytes: z
    .number()
    .int()
    .min(0)
    .default(64 * 1024 * 1024)
    .describe(
      "A body over `max_body_bytes` up to this many bytes in all is read to its end and dropped (never kept) before its `413`, so that clients that write the whole body before reading the answer (Node's `fetch`, Python's `urllib`, most SDKs) get the JSON rather than `EPIPE` / `Broken pipe`; so is a body refused before it was read (`401`, `429`, `415`, `404`…), for 2 s at most (`discard_time` when shorter): a body sent at once is in long before, and the connection stays open for the next request; a slower upload is answered then and cut off. A body declared longer is not read at all, and a client still sending past it is cut off (curl, which reads while it writes, gets the answer anyway). `0` reads nothing.",
    ),
  discard_time: seconds
    .max(300)
    .default(30)
    .describe("Seconds at most spent reading it (nginx's `lingering_time`), whichever bound comes first: then the answer is sent and the connection closed."),
})

/** The server's log (src/observe/logger.ts). */
const logSchema = z.object({
  format: z
    .enum(['text', 'json'])
    .default('text')
    .describe(
      '`text`: a line per event, starting with an ISO timestamp and the level (`2026-12-01T12:00:00.000Z INFO  [mls] …`), fields after as `key=value`; `json`: one object per line, `{"time","level","msg", …fields}` (`node_id`, `region`, `task_id`, `status`, …).',
    ),
  level: z
    .enum(['debug', 'info', 'warn', 'error'])
    .default('info')
    .describe('The least level written: `debug`, `info`, `warn` (ejections, unknown keys), `error` (rejected reloads, unhandled errors).'),
  access: z
    .boolean()
    .default(false)
    .describe(
      'One line per task request answered: task id, mode, region, node (a broadcast: how many of its clients answered, `→ 3 of 4 answered`, and `answered=3`), status, outcome, attempts and duration. No log line ever holds a token, a password or a payload (the one exception is the token generated when none is configured, printed once at start-up, outside the log).',
    ),
})

/** OTLP/HTTP export of spans (src/observe/tracing/): absent, no span is made, and a caller's `traceparent` is passed on as it came. */
const tracingSchema = z.object({
  endpoint: z
    .url({ protocol: /^https?$/ })
    .describe("The collector's OTLP/HTTP traces URL, JSON encoding (`http://127.0.0.1:4318/v1/traces` for a local OpenTelemetry Collector)."),
  sample_ratio: z
    .number()
    .min(0)
    .max(1)
    .default(1)
    .describe(
      "The share of traces Moonlight starts (no `traceparent` from the caller) that it records and exports; a caller's own trace follows the caller's sampled flag. An unrecorded trace is still passed to agents.",
    ),
  headers: z
    .record(z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'must be a header name'), z.string())
    .default({})
    .describe('Headers sent with every export (an API key, a tenant). Never logged.'),
  service_name: z.string().min(1).default('moonlight').describe("The `service.name` of the spans' resource."),
  flush_interval: z.number().positive().max(60).default(1).describe('Seconds at most a finished span waits before its batch is sent.'),
  batch_spans: z.number().int().min(1).max(10_000).default(512).describe('A batch goes out at once when it holds this many spans.'),
  max_queued_spans: z
    .number()
    .int()
    .min(1)
    .default(8192)
    .describe(
      'Spans waiting to be sent at most; past it (a collector down or slow) new spans are dropped and counted in `moonlight_trace_spans_dropped_total`.',
    ),
  timeout: z
    .number()
    .positive()
    .max(60)
    .default(10)
    .describe('Seconds one export request may take; a failed or slow one drops its batch (counted), never retried.'),
})

/** Stored tasks: async ones, and any task sent with an Idempotency-Key (src/tasks/stored/store.ts). */
const tasksSchema = z.object({
  result_ttl: seconds
    .default(600)
    .describe(
      'Seconds a finished [stored task](http-api.md#async-tasks-and-idempotency-keys) (async, or sent with an `Idempotency-Key`) is kept; then `GET /task/{id}` is `404`.',
    ),
  max_results: z
    .number()
    .int()
    .positive()
    .default(100_000)
    .describe(
      'Stored tasks at most; past it the oldest finished one is evicted (`moonlight_stored_tasks_evicted_total`); with none finished, a new one gets `503 too_many_tasks`.',
    ),
  max_bytes: z
    .number()
    .int()
    .positive()
    .default(1024 ** 3)
    .describe(
      "Alone (in memory): the stored tasks' payloads and results together at most, in bytes (a result's body counted in base64); past it the oldest finished ones are evicted (counted as above), with none finished a new one gets `503 too_many_tasks`; the task just finished is never the one dropped. In a cluster the tasks are in Redis: bound them with Redis's own `maxmemory`.",
    ),
  idempotency_ttl: seconds
    .default(86_400)
    .describe('Seconds an `Idempotency-Key` is honoured (its task is kept that long), unless the task is evicted under `tasks.max_results`.'),
  concurrency: z.number().int().positive().default(1000).describe('Async tasks one instance runs at once; the rest wait in the queue.'),
  claim_margin: seconds
    .default(5)
    .describe('In a cluster, a claimed async task not finished within `task_timeout` plus this is taken over by another instance.'),
})

// Security (docs/security.md): TLS for the server, HTTPS agents, signed calls to agents.

const pemPath = z.string({ error: (issue) => (issue.input === undefined ? 'required: "tls" needs both "cert" and "key"' : 'must be a file path') }).min(1)

/** The server's certificate chain and key (PEM files): HTTPS and WSS on `port`. Re-read on SIGHUP, so a renewed certificate applies without a restart. */
const tlsSchema = z.object({
  cert: pemPath.describe('The PEM certificate chain (a file path).'),
  key: pemPath.describe('The PEM private key of its first certificate (a file path).'),
})

/** Signs every call to an HTTP agent (src/security/signing.ts); long enough that guessing it is not the easy way in. */
const signingSecretSchema = z.string().min(16, 'must be at least 16 characters')

// Access (src/security/access.ts): roles per token, tokens kept outside this file, limits on guessing.

const tokenSchema = z.string().min(8, 'tokens must be at least 8 characters')

export const roleSchema = z.enum(['agent', 'submit', 'monitor', 'admin'])
export type Role = z.infer<typeof roleSchema>

// Strict: a misspelt "region" must be an error, not a token silently allowed everywhere.
const accessEntrySchema = z
  .strictObject({
    token: tokenSchema.optional().describe('The token itself; give exactly one of `token` and `token_sha256`.'),
    token_sha256: z
      .string()
      .regex(/^[0-9a-fA-F]{64}$/, 'must be the SHA-256 of the token as 64 hex digits')
      .transform((hex) => hex.toLowerCase())
      .optional()
      .describe('The SHA-256 of the token as hex (`printf %s "$TOKEN" | sha256sum`), so the secret itself stays out of this file.'),
    roles: z.array(roleSchema).min(1, 'name at least one role').describe('At least one of `agent`, `submit`, `monitor`, `admin`.'),
    regions: z
      .array(nameSchema)
      .min(1, 'name at least one region, or leave "regions" out for every region')
      .optional()
      .describe('Where the token may register agents and send tasks (each region with everything under it); absent: everywhere.'),
  })
  .refine((entry) => (entry.token === undefined) !== (entry.token_sha256 === undefined), 'give exactly one of "token" and "token_sha256"')
export type AccessEntry = z.infer<typeof accessEntrySchema>

const authSchema = z.object({
  max_failures: z
    .number()
    .int()
    .positive()
    .max(1000)
    .default(20)
    .describe(
      'Failed authentications (a missing or wrong token) one address may make per sliding `window`; past it, further failures get `429 too_many_failures` with `Retry-After`. Valid tokens are never held up.',
    ),
  window: seconds.max(86_400).default(60).describe('The sliding window of `max_failures`, in seconds.'),
})

export const configSchema = z.object({
  note: z.string().optional().describe('Free text, ignored.'),
  tokens: z
    .array(tokenSchema)
    .default([])
    .describe(
      'Tokens that may do everything (every role, every region): agents send one in `register`/heartbeat; callers send `Authorization: Bearer <token>`. With no token configured anywhere (`tokens`, `access`, `tokens_file`, `MLS_TOKENS`), a random one is generated, printed at start-up and kept for the next start (see the [README](../README.md)).',
    ),
  // Access (src/security/access.ts): roles per token, tokens from a file, limits on failed authentication.
  access: z
    .array(accessEntrySchema)
    .default([])
    .describe(
      'Tokens with roles and, optionally, regions: `{"token": "…" or "token_sha256": "<64 hex>", "roles": ["agent", "submit", "monitor", "admin"], "regions": ["us-east-1"]}` (see [Roles and tokens](security.md#roles-and-tokens)).',
    ),
  tokens_file: z
    .string()
    .min(1)
    .optional()
    .describe(
      'A file of tokens, one per line, each meaning every role like `tokens`; relative to the config file; read again on every reload. `MLS_TOKENS` (comma-separated, in the environment) adds more.',
    ),
  auth: authSchema.prefault({}).describe('Failed authentications, throttled per source address.'),
  retry_count: z.number().int().min(0).max(10).default(3).describe('Retries of a failed task on other clients (so up to 4 attempts).'),
  port: z.number().int().min(0).max(65535).default(8080).describe('Where the server listens (`--port` overrides it); applies at the next start.'),
  host: z.string().min(1).default('0.0.0.0').describe('The address it listens on (`--host` overrides it); applies at the next start.'),
  task_timeout: seconds
    .default(30)
    .describe(
      "The longest a caller waits for an answer, all attempts included → `504`. It is the only limit: no idle limit cuts a call to an agent (the server's own client waits for the deadline alone), and Bun's 5-minute idle limit on `fetch` is off for `moonlight task`, so a long task is not cut (and re-run elsewhere) at 5 minutes.",
    ),
  max_body_bytes: z
    .number()
    .int()
    .positive()
    .default(1024 * 1024)
    .describe('Larger request bodies get `413` before being read whole.'),
  oversized_body: oversizedBodySchema
    .prefault({})
    .describe(
      'What is read of a body over `max_body_bytes` before its `413` (up to 64 MiB in all and for 30 s at most, whichever comes first; then the `413` is sent and the connection closed), and of a body refused before it was read (a wrong token, a body not declared JSON, no such route for a `POST`: the same bytes, for 2 s at most; the connection stays open when the whole body was read).',
    ),
  // A runaway agent must not exhaust the server's memory.
  max_answer_bytes: z
    .number()
    .int()
    .positive()
    .default(16 * 1024 * 1024)
    .describe(
      "The largest answer taken from a client. An HTTP answer over it (by its declared length, or counted as it arrives when chunked or compressed, by its unpacked size) is cut off and the caller gets `502 answer_too_large`, not retried and not counted against the client's health: the work was done, and doing it again elsewhere would not make the answer smaller. Over WebSocket the limit is on the whole message (the `task_response` envelope included): Bun closes a socket whose message passes it (1009) before Moonlight can read which task it answered, so every task that socket owed is retried elsewhere, like any disconnect, and each attempt names the limit. For WebSocket messages it applies at the next start.",
    ),
  require_task_token: z
    .boolean()
    .default(true)
    .describe(
      '`false` opens `POST /task/request` without a token, and without its role and region checks (heartbeats, `/clients` and the dashboard still need one).',
    ),
  client_ttl: seconds.default(90).describe('An HTTP client with no heartbeat for this long is removed.'),
  // So that a flood of node ids cannot grow the server without bound.
  max_clients: z
    .number()
    .int()
    .positive()
    .default(100_000)
    .describe(
      'Registered clients at most: past it a new `node_id` gets `503 too_many_clients` (heartbeat), or an error frame with that code and close 1013 (WebSocket); clients already known keep refreshing.',
    ),
  health: healthSchema
    .prefault({})
    .describe('Passive health: when a failing client is ejected, and for how long ([Routing, health and failover](routing.md)).'),
  routing: routingSchema.prefault({}).describe('How tasks find clients ([Routing, health and failover](routing.md)).'),
  queue: queueSchema
    .prefault({})
    .describe(
      "Tasks waiting for an agent's slot when every agent they may reach is full ([Slots, the queue, least-request and the retry budget](routing.md#slots-the-queue-least-request-and-the-retry-budget)).",
    ),
  ws: wsSchema.prefault({}).describe('The WebSocket endpoint ([WebSocket protocol](websocket-protocol.md)).'),
  html: htmlSchema.prefault({}).describe('The docs page, the dashboard and their assets; these apply at the next start.'),
  region_hierarchy: hierarchySchema.describe(
    "Child → parent; the root is `global`; cycles are rejected. `{}` in a file; the embedded default has the example's map. Region names (here, in `access`, and an agent's `region` and `node_id`) follow one rule: 1-128 letters, digits and `. _ : @ -`, and not `__proto__`, `.` or `..` (a URL path drops those, so no `/clients/{node_id}` could name such a node); anything else is refused, at start-up here, with `400 invalid_body` (heartbeat) or an `invalid_message` frame (WebSocket) from an agent.",
  ),
  agents: agentsSchema.prefault({}).describe('Where HTTP agents may be called, and the CA their certificates are checked against.'),
  http_agents: httpAgentsSchema.prefault({}).describe("The server's keep-alive connections to HTTP agents, pooled per agent."),
  tasks: tasksSchema.prefault({}).describe('Stored tasks: async ones, and any task sent with an `Idempotency-Key`.'),
  log: logSchema.prefault({}).describe("The server's log."),
  tracing: tracingSchema
    .optional()
    .describe(
      "W3C trace context and span export ([Tracing](operations.md#tracing)); absent: a caller's `traceparent` and `tracestate` still reach agents unchanged, and no span is made.",
    ),
  answers: z
    .object({
      pass_headers: z
        .array(z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'must be a header name'))
        .default([])
        .describe(
          "Agent answer headers passed to callers besides the defaults (content type, language, cache control, ETag, Last-Modified, `X-*`; see [What agents' answers may carry](security.md#what-agents-answers-may-carry)).",
        ),
    })
    .prefault({})
    .describe("What of an agent's answer reaches the caller."),
  trusted_proxies: z
    .array(cidrSchema)
    .default([])
    .describe("Proxies (CIDRs) whose `X-Forwarded-For` gives the source address (heartbeats' own address, failed-authentication counts)."),
  // Cluster mode (src/cluster/): several instances sharing one fleet through Redis. Absent: one process, in memory.
  cluster: clusterSchema.optional().describe('Several instances acting as one through Redis; absent: one process, in memory ([Cluster mode](cluster.md)).'),
  // Security: TLS, HTTPS agents, signed calls to agents.
  tls: tlsSchema
    .optional()
    .describe(
      'PEM certificate chain and private key, both or neither; absent: plain HTTP. HTTPS and WSS on `port`; re-read on SIGHUP, so a renewed certificate applies without a restart (see [TLS](security.md#tls)).',
    ),
  signing_secret: signingSecretSchema
    .optional()
    .describe(
      '16 characters at least: every call to an HTTP agent is signed with it; absent: calls are unsigned (see [Signed calls to agents](security.md#signed-calls-to-agents)).',
    ),
})

/** The config schema with the checks across keys: an `access` token must not be granted again in `tokens` or another entry. */
const checkedConfigSchema = configSchema.superRefine((config, ctx) => {
  const regrant = findRegrant(config.access, config.tokens, 'tokens')
  if (regrant)
    ctx.addIssue({ code: 'custom', path: ['access', regrant.entry], message: `this token is also granted by ${regrant.elsewhere}: give each token one grant` })
})

export type Config = z.infer<typeof configSchema>

/** What a new user gets with no file at all: the seed's hierarchy, WebSocket and pages on. */
export const EMBEDDED_DEFAULT: z.input<typeof configSchema> = { region_hierarchy: SEED_HIERARCHY }

export class ConfigError extends Error {
  override name = 'ConfigError'
}

export interface LoadedConfig {
  config: Config
  /** The file it came from, or "embedded default". */
  source: string
  /** Keys the schema does not know, as dotted paths; warned about, not fatal. */
  unknownKeys: string[]
  /** Tokens from `tokens_file` and `MLS_TOKENS`, each meaning every role like `tokens` (readTokensFile, envTokens). */
  externalTokens: string[]
}

/**
 * The config with `cluster.redis_url` set from `serve --redis` or $MLS_REDIS_URL (a cluster section
 * is made if there is none); validated like the file's own.
 */
export function withRedisUrl(loaded: LoadedConfig, redisUrl: string | undefined): LoadedConfig {
  if (!redisUrl) return loaded
  const result = clusterSchema.safeParse({ ...loaded.config.cluster, redis_url: redisUrl })
  if (!result.success) throw new ConfigError(`invalid --redis / MLS_REDIS_URL: ${result.error.issues.map((issue) => issue.message).join('; ')}`)
  return { ...loaded, config: { ...loaded.config, cluster: result.data } }
}

/** Validates a parsed config object; throws ConfigError naming each bad key. */
export function parseConfig(raw: unknown, source: string): LoadedConfig {
  const result = checkedConfigSchema.safeParse(raw)
  if (!result.success) {
    const problems = result.error.issues.map((issue) => `  ${issue.path.join('.') || '(top level)'}: ${issue.message}`)
    throw new ConfigError(`invalid config ${source}:\n${problems.join('\n')}`)
  }
  return { config: result.data, source, unknownKeys: unknownKeys(configSchema, raw), externalTokens: [] }
}

/** Far beyond any real config; an endless file (`--config /dev/zero`) must fail, not hang start-up or a reload. */
export const MAX_CONFIG_BYTES = 16 * 1024 * 1024
const READ_CHUNK_BYTES = 64 * 1024

/** Reads and validates one config file. */
export function readConfigFile(path: string): LoadedConfig {
  let bytes: Buffer | undefined
  try {
    bytes = readBytesAtMost(path, MAX_CONFIG_BYTES)
  } catch (error) {
    throw new ConfigError(`cannot read config ${path}: ${(error as Error).message}`)
  }
  if (bytes === undefined) throw new ConfigError(`config ${path} is too large (more than ${MAX_CONFIG_BYTES / (1024 * 1024)} MiB)`)
  // Decoded leniently, a byte that is not UTF-8 (a Latin-1 "é" in a token) would become U+FFFD: a token nobody holds.
  const notUtf8 = firstLineNotUtf8(bytes)
  if (notUtf8 !== undefined) throw new ConfigError(`config ${path} is not UTF-8 (line ${notUtf8} has bytes that are not): save it as UTF-8`)
  let raw: unknown
  // A byte-order mark (Windows editors save UTF-8 with one) is not JSON, but no part of the config either.
  const json = bytes.toString('utf8').replace(/^\uFEFF/, '')
  try {
    raw = JSON.parse(json)
  } catch (error) {
    // Bun's JSON.parse says what is wrong but not where: a person editing the file needs both.
    const at = syntaxErrorAt(json)
    const where = at === undefined ? '' : ` at line ${at.line}, column ${at.column}`
    throw new ConfigError(`config ${path} is not valid JSON${where}: ${withoutQuotedText((error as Error).message)}`)
  }
  // JSON.parse keeps the last of a key given twice: the first "tokens" or "access" would be dropped without a word.
  const twice = duplicateKeyIn(json)
  if (twice) {
    const where = ({ line, column }: TextPosition) => `line ${line}, column ${column}`
    throw new ConfigError(
      `config ${path} has the key "${twice.path}" twice (${where(twice.first)} and ${where(twice.second)}): JSON keeps only the last, and the first would be ignored; give it once`,
    )
  }
  const loaded = parseConfig(raw, path)
  const { tokens_file } = loaded.config
  return tokens_file === undefined ? loaded : withTokens(loaded, readTokensFile(resolve(dirname(path), tokens_file)), 'tokens_file')
}

/** The file as UTF-8 text, or undefined if it holds more than `maxBytes`; see readBytesAtMost. */
export function readAtMost(path: string, maxBytes: number): string | undefined {
  return readBytesAtMost(path, maxBytes)?.toString('utf8')
}

/**
 * The file's bytes, or undefined if it holds more than `maxBytes`; reads one byte past the limit at most, whatever the file's
 * size claims. Never waits: these reads run at start-up and on SIGHUP, in the process that serves, so a named pipe
 * (whose open waits for a writer) is refused, and a terminal with nothing to read fails (EAGAIN) instead of blocking.
 */
export function readBytesAtMost(path: string, maxBytes: number): Buffer | undefined {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK)
  try {
    const kind = fstatSync(fd)
    if (kind.isFIFO()) throw new Error('a named pipe (FIFO), not a file')
    if (kind.isSocket()) throw new Error('a socket, not a file')
    const chunks: Buffer[] = []
    let total = 0
    while (total <= maxBytes) {
      const chunk = Buffer.allocUnsafe(Math.min(READ_CHUNK_BYTES, maxBytes + 1 - total))
      const read = readSync(fd, chunk, 0, chunk.length, null)
      if (read === 0) return Buffer.concat(chunks, total)
      chunks.push(chunk.subarray(0, read))
      total += read
    }
    return undefined
  } finally {
    closeSync(fd)
  }
}

/**
 * Bun's JSON.parse quotes what it stumbled on (`Unexpected identifier "…"`): a token written without its quotes
 * would be printed, and at a reload logged. The line and column say where; the quoted text is left out.
 */
function withoutQuotedText(message: string): string {
  return message.replace(/"(?:[^"\\]|\\.)*"/g, '…')
}

/** The 1-based number of the first line holding bytes that are not UTF-8, or undefined if there is none. */
function firstLineNotUtf8(bytes: Buffer): number | undefined {
  if (isUtf8(bytes)) return undefined
  // Split at "\n" bytes, which never occur inside a UTF-8 sequence.
  for (let line = 1, start = 0; start <= bytes.length; line++) {
    const end = bytes.indexOf(0x0a, start)
    const stop = end === -1 ? bytes.length : end
    if (!isUtf8(bytes.subarray(start, stop))) return line
    start = stop + 1
  }
  return undefined
}

export interface SearchPlaces {
  explicitPath?: string
  env?: Record<string, string | undefined>
  cwd?: string
  home?: string
}

/** The config files tried, in order: --config, $MLS_CONFIG, ./mls.json, ~/.config/moonlight, /etc/moonlight. */
export function configCandidates(places: SearchPlaces = {}): string[] {
  const env = places.env ?? process.env
  return [
    places.explicitPath,
    env.MLS_CONFIG,
    join(places.cwd ?? process.cwd(), 'mls.json'),
    join(places.home ?? homedir(), '.config', 'moonlight', 'mls.json'),
    '/etc/moonlight/mls.json',
  ].filter((path): path is string => Boolean(path))
}

/**
 * Whether a well-known config path holds something. Only "no such file" is absence: a directory the
 * server may not enter (a root-owned /etc/moonlight of mode 0700 for a container's non-root user) hides
 * whether a config is there, and serving the embedded default with a generated token instead would
 * silently ignore the operator's file.
 */
function isPresent(path: string): boolean {
  try {
    statSync(path)
    return true
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') return false
    throw new ConfigError(`cannot read config ${path}: ${code === 'EACCES' ? 'permission denied' : (error as Error).message} (a config may be there)`)
  }
}

/**
 * Loads the first config found. An explicitly named file (--config or $MLS_CONFIG) must exist;
 * the well-known places are optional and fall through to the embedded default.
 */
export function loadConfig(places: SearchPlaces = {}): LoadedConfig {
  const env = places.env ?? process.env
  const explicit = places.explicitPath ?? env.MLS_CONFIG
  const found = explicit ? readConfigFile(explicit) : readFirstCandidate(places)
  return env.MLS_TOKENS ? withTokens(found, envTokens(env.MLS_TOKENS), 'MLS_TOKENS') : found
}

function readFirstCandidate(places: SearchPlaces): LoadedConfig {
  for (const path of configCandidates(places)) {
    if (isPresent(path)) return readConfigFile(path)
  }
  return parseConfig(EMBEDDED_DEFAULT, 'embedded default')
}

/** The warning for an unknown key (as unknownKeys names it), with the known key beside it that it is likely a typo of. */
export function unknownKeyWarning(key: string): string {
  const path = key.split('.')
  const name = path.pop()!
  let shape = objectShape(configSchema)
  for (const part of path) shape = shape && Object.hasOwn(shape, part) ? objectShape(shape[part]!) : undefined
  const near = shape && nearestName(name, Object.keys(shape))
  return `unknown config key "${key}" is ignored${near ? ` (did you mean "${[...path, near].join('.')}"?)` : ''}`
}

function unknownKeys(schema: z.ZodType, raw: unknown, prefix = ''): string[] {
  const shape = objectShape(schema)
  if (!shape || typeof raw !== 'object' || raw === null || Array.isArray(raw)) return []
  const found: string[] = []
  for (const [key, value] of Object.entries(raw)) {
    // Own keys only: shape["constructor"] or shape["__proto__"] is Object.prototype's, which would pass such a key as known.
    const child = Object.hasOwn(shape, key) ? shape[key] : undefined
    if (!child) found.push(prefix + key)
    else found.push(...unknownKeys(child, value, `${prefix}${key}.`))
  }
  return found
}

/** The object shape behind defaults/prefaults/optionals/transforms, or undefined for a non-object schema. */
function objectShape(schema: z.ZodType): Record<string, z.ZodType> | undefined {
  if (schema instanceof z.ZodObject) return schema.shape as Record<string, z.ZodType>
  // A transform (ws fills in its derived default) is a pipe from the object schema it reads.
  if (schema instanceof z.ZodPipe) return objectShape(schema.in as z.ZodType)
  if (schema instanceof z.ZodDefault || schema instanceof z.ZodPrefault || schema instanceof z.ZodOptional) {
    return objectShape(schema.unwrap() as z.ZodType)
  }
  return undefined
}

// Tokens kept outside mls.json (src/security/access.ts gives each one every role, like `tokens`).

/** A tokens file is a short list; anything this large is a wrong path (a log, a device), not tokens. */
export const MAX_TOKENS_FILE_BYTES = 1024 * 1024

/** Control characters (a tab or a space within a line's edges is trimmed, not refused) and U+FFFD, what bytes that are not UTF-8 decode to. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what this looks for.
const NOT_TEXT = /[\u0000-\u0008\u000b-\u001f\u007f\ufffd]/

/**
 * The tokens of a tokens_file: one per line, surrounding spaces trimmed; empty lines and lines
 * starting with "#" are skipped. Each must pass the rules of `tokens`; a problem names the line, never the token.
 */
export function readTokensFile(path: string): string[] {
  let text: string | undefined
  try {
    text = readAtMost(path, MAX_TOKENS_FILE_BYTES)
  } catch (error) {
    throw new ConfigError(`cannot read tokens_file ${path}: ${(error as Error).message}`)
  }
  if (text === undefined) throw new ConfigError(`tokens_file ${path} is too large (more than ${MAX_TOKENS_FILE_BYTES / 1024} KiB)`)
  const lines = text.split(/\r?\n/).map((line, index) => ({ token: line.trim(), where: `line ${index + 1}` }))
  // A wrong path to a binary file (a key, an archive) would otherwise become tokens of garbage, each
  // line of 8 or more bytes one, that no Authorization header can carry: refuse it, naming the line.
  const binary = lines.findIndex(({ token }) => NOT_TEXT.test(token))
  if (binary >= 0)
    throw new ConfigError(`tokens_file ${path} is not text (line ${binary + 1} has a control character or is not UTF-8): it holds one token per line`)
  const listed = lines.filter(({ token }) => token !== '' && !token.startsWith('#'))
  if (listed[0]?.token.startsWith('[')) throw new ConfigError(`tokens_file ${path} holds one token per line, not a JSON array`)
  return checkTokens(listed, `tokens_file ${path}`)
}

/** The tokens of MLS_TOKENS: comma-separated, surrounding spaces trimmed, empty entries skipped. */
export function envTokens(value: string): string[] {
  const entries = value.split(',').map((entry, index) => ({ token: entry.trim(), where: `entry ${index + 1}` }))
  return checkTokens(
    entries.filter(({ token }) => token !== ''),
    'MLS_TOKENS',
  )
}

function checkTokens(tokens: Array<{ token: string; where: string }>, source: string): string[] {
  const problems: string[] = []
  for (const { token, where } of tokens) {
    const result = tokenSchema.safeParse(token)
    if (!result.success) problems.push(`  ${where}: ${result.error.issues[0]?.message}`)
  }
  if (problems.length > 0) throw new ConfigError(`invalid ${source}:\n${problems.join('\n')}`)
  return tokens.map(({ token }) => token)
}

/** `loaded` with more every-role tokens; a token already restricted by an `access` entry is refused (one grant per token). */
function withTokens(loaded: LoadedConfig, tokens: string[], source: string): LoadedConfig {
  const regrant = findRegrant(loaded.config.access, tokens, source)
  if (regrant)
    throw new ConfigError(`invalid config ${loaded.source}:\n  access.${regrant.entry}: this token is also granted by ${source}: give each token one grant`)
  return { ...loaded, externalTokens: [...loaded.externalTokens, ...tokens] }
}
