import { closeSync, openSync, readSync, statSync } from 'node:fs'
import { homedir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { z } from 'zod'
import { ROOT_REGION } from '../fleet/regions.ts'
import { findRegrant } from '../security/access.ts'
import { PRIVATE_NETWORKS, parseCidr } from '../security/networks.ts'
import { nameSchema, payloadFormatSchema, RESERVED_NAME, reservedNameMessage } from '../wire/names.ts'
import { fallbackSchema, RETRY_ON_ALL, retryOnListSchema } from '../wire/task.ts'
import { syntaxErrorAt } from './json-syntax.ts'
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
    enabled: z.boolean().default(true),
    path: z.string().startsWith('/', 'must start with "/"').default('/ws'),
    max_connections: z.number().int().positive().default(1000),
    read_timeout: seconds.default(300),
    write_timeout: seconds.default(30),
    heartbeat_interval: seconds.default(30),
    connection_check_interval: seconds.default(60),
    /** A socket that has neither registered nor joined the monitor feed by then is closed: pongs alone keep a squatter alive. */
    /** Origins besides the server's own whose pages may open a WebSocket (a dashboard served elsewhere). */
    allowed_origins: z.array(z.string().regex(/^https?:\/\/[^/\s]+$/, 'must be an origin such as https://ops.example.com')).default([]),
    register_timeout: seconds.default(10),
    /** The payload format of an agent whose `register` names none: `string` for the original Moonlight's clients. */
    payload_format: payloadFormatSchema.default('object'),
    /** Sockets not yet registered, at most; the rest of max_connections is kept for registered agents. Default: maxUnregisteredFor(max_connections). */
    max_unregistered: z.number().int().positive().optional(),
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
  enabled: z.boolean().default(true),
  static_path: z.string().startsWith('/', 'must start with "/"').default('/static'),
  index_path: z.string().startsWith('/', 'must start with "/"').default('/'),
  dashboard_path: z.string().startsWith('/', 'must start with "/"').default('/dashboard'),
})

const healthSchema = z.object({
  /** Consecutive failures (refused, reset, 5xx, timeout) that eject a client. */
  failures_to_eject: z.number().int().positive().default(3),
  /** First ejection lasts this long; each further one doubles it. */
  ejection_time: seconds.default(30),
  max_ejection_time: seconds.default(300),
  /** A region never has more than this share of its clients ejected at once. */
  max_ejected_percent: z.number().min(0).max(100).default(50),
  /** Seconds over which a client that joins or returns from ejection ramps from 10 % to 100 % of its weight; 0: at once. */
  slow_start: z.number().min(0).max(3600).default(0),
})

/** Tasks waiting for an agent's slot when every agent of their pool is full (README "Slots and the queue"). */
const queueSchema = z.object({
  /** Seconds a task may wait for a slot (a task's own queue_timeout may say otherwise); past it, 503 queue_timeout. */
  timeout: seconds.default(10),
  /** Tasks that may wait in one pool's queue; past it, 503 queue_full. */
  max: z.number().int().min(0).max(1_000_000).default(1000),
  /** Seconds of waiting that count as one priority class up, so low tasks are never starved. */
  promote_after: seconds.default(5),
})

/** How tasks find clients (README "Routing, health and failover"). */
const routingSchema = z.object({
  /** A task's `fallback` when it gives none: "parent" climbs the hierarchy when a region has no candidate, "none" never leaves it. */
  fallback: fallbackSchema.default('parent'),
  /** "round_robin": smooth weighted round-robin; "least_request": the less loaded (in flight / weight) of two random clients, which favours fast agents. */
  balance: z.enum(['round_robin', 'least_request']).default('round_robin'),
  /** Retries in a region pool at most `percent` of its tasks in flight, or `min` (Envoy's defaults), so a failing region is not flooded. */
  retry_budget: z.object({ percent: z.number().min(0).max(100).default(20), min: z.number().int().min(0).default(3) }).prefault({}),
  /** The attempt failures a task may be retried after (a task may narrow it, never widen it); default: all three. */
  retry_on: retryOnListSchema.default([...RETRY_ON_ALL]),
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

/** Several instances as one through Redis (README "Cluster mode"). */
const clusterSchema = z.object({
  /** redis:// or rediss:// (TLS), with a password (redis://:secret@host) and a database number (/2) if needed. */
  redis_url: z
    .string()
    .refine((url) => /^rediss?:\/\/[^\s]+$/.test(url) && URL.canParse(url), 'must be a redis:// or rediss:// URL, e.g. redis://127.0.0.1:6379'),
  /** This instance's name among the others; default: the host name and the port. */
  instance_id: z
    .string()
    .regex(/^[\w.:@-]{1,128}$/, 'only letters, digits and . _ : @ - (at most 128)')
    .optional(),
  key_prefix: z
    .string()
    .regex(/^[\w.:-]{0,64}$/, 'only letters, digits and . _ : - (at most 64)')
    .default('mls:'),
  /** An instance that has not refreshed its presence for this long is dead, and its clients are dropped. */
  instance_ttl: seconds.min(1).max(300).default(5),
  /** Every Redis command must be answered within this: a Redis that hangs then counts as lost (degraded, /readyz 503). */
  command_timeout: seconds.min(0.1).max(60).default(2),
  /** How other instances and operators reach this one (shown in /cluster); default: http(s)://<host name>:<port>. */
  advertise_url: z.string().url().optional(),
  /** Prefer agents held by this instance, saving the hop through Redis, at the price of exact shares cluster-wide. */
  prefer_local: z.boolean().default(false),
})

/** Where HTTP agents may be called (see src/security/agent-call-address.ts). */
const agentsSchema = z.object({
  allowed_networks: z.array(cidrSchema).default(PRIVATE_NETWORKS),
  /** A PEM bundle: the CA (a private one) that HTTPS agents' certificates are verified against. Re-read on SIGHUP. */
  ca: z.string().min(1).optional(),
})

/** The server's keep-alive connections to HTTP agents (src/transports/http-client/pool.ts). */
const httpAgentsSchema = z.object({
  /** Connections to one agent at most; calls past it wait in order for one. */
  max_connections: z.number().int().positive().default(64),
  /** An unused connection to an agent is closed after this many seconds (sooner if the agent's Keep-Alive: timeout says so). */
  idle_timeout: seconds.default(30),
})

/**
 * What is read of a request body over max_body_bytes before its 413 (src/http/oversized-body.ts): enough
 * for clients that write the whole body before reading the answer to get it, bounded so that an
 * endless upload cannot hold a connection.
 */
const oversizedBodySchema = z.object({
  /** A body up to this many bytes in all is read to its end and dropped before the 413; a longer one is cut off there (0: none is read). */
  discard_bytes: z
    .number()
    .int()
    .min(0)
    .default(64 * 1024 * 1024),
  /** Seconds at most spent reading it (nginx's lingering_time): then the 413 is sent and the connection closed, whatever is left. */
  discard_time: seconds.max(300).default(30),
})

/** The server's log (src/observe/logger.ts). */
const logSchema = z.object({
  /** `text`: a timestamp, the level and the message; `json`: one object per line (time, level, msg, fields). */
  format: z.enum(['text', 'json']).default('text'),
  /** The least level written. */
  level: z.enum(['debug', 'info', 'warn', 'error']).default('info'),
  /** One line per task request answered: its id, region, node, status, attempts and duration. */
  access: z.boolean().default(false),
})

/** Stored tasks: async ones, and any task sent with an Idempotency-Key (src/tasks/stored/store.ts). */
const tasksSchema = z.object({
  /** A finished task's result is kept this many seconds. */
  result_ttl: seconds.default(600),
  /** Stored tasks at most; past it the oldest finished one is evicted (counted in /metrics), and with none finished a new one is refused 503. */
  max_results: z.number().int().positive().default(100_000),
  /** Alone (in memory): the stored tasks' payloads and results together at most, in bytes; past it the oldest finished ones are evicted, and with none finished a new one is refused 503. */
  max_bytes: z
    .number()
    .int()
    .positive()
    .default(1024 ** 3),
  /** A task sent with an Idempotency-Key is kept, and the key honoured, this many seconds (unless evicted under max_results). */
  idempotency_ttl: seconds.default(86_400),
  /** Async tasks one instance runs at once; the rest wait in the queue. */
  concurrency: z.number().int().positive().default(1000),
  /** In a cluster: a claimed task not finished within task_timeout plus this many seconds is taken over by another instance. */
  claim_margin: seconds.default(5),
})

// Security (README "Security"): TLS for the server, HTTPS agents, signed calls to agents.

const pemPath = z.string({ error: (issue) => (issue.input === undefined ? 'required: "tls" needs both "cert" and "key"' : 'must be a file path') }).min(1)

/** The server's certificate chain and key (PEM files): HTTPS and WSS on `port`. Re-read on SIGHUP, so a renewed certificate applies without a restart. */
const tlsSchema = z.object({ cert: pemPath, key: pemPath })

/** Signs every call to an HTTP agent (src/security/signing.ts); long enough that guessing it is not the easy way in. */
const signingSecretSchema = z.string().min(16, 'must be at least 16 characters')

// Access (src/security/access.ts): roles per token, tokens kept outside this file, limits on guessing.

const tokenSchema = z.string().min(8, 'tokens must be at least 8 characters')

export const roleSchema = z.enum(['agent', 'submit', 'monitor', 'admin'])
export type Role = z.infer<typeof roleSchema>

// Strict: a misspelt "region" must be an error, not a token silently allowed everywhere.
const accessEntrySchema = z
  .strictObject({
    token: tokenSchema.optional(),
    /** The SHA-256 of the token as hex (`printf %s "$TOKEN" | sha256sum`), so the secret itself stays out of this file. */
    token_sha256: z
      .string()
      .regex(/^[0-9a-fA-F]{64}$/, 'must be the SHA-256 of the token as 64 hex digits')
      .transform((hex) => hex.toLowerCase())
      .optional(),
    roles: z.array(roleSchema).min(1, 'name at least one role'),
    /** Where the token may register agents and send tasks (each region with everything under it); absent: everywhere. */
    regions: z.array(nameSchema).min(1, 'name at least one region, or leave "regions" out for every region').optional(),
  })
  .refine((entry) => (entry.token === undefined) !== (entry.token_sha256 === undefined), 'give exactly one of "token" and "token_sha256"')
export type AccessEntry = z.infer<typeof accessEntrySchema>

const authSchema = z.object({
  /** Failed authentications an address may make within `window` before further failures get 429. */
  max_failures: z.number().int().positive().max(1000).default(20),
  window: seconds.max(86_400).default(60),
})

export const configSchema = z.object({
  note: z.string().optional(),
  tokens: z.array(tokenSchema).default([]),
  // Access (src/security/access.ts): roles per token, tokens from a file, limits on failed authentication.
  access: z.array(accessEntrySchema).default([]),
  /** A file of tokens, one per line, each meaning every role like `tokens`; read again on every reload. */
  tokens_file: z.string().min(1).optional(),
  auth: authSchema.prefault({}),
  retry_count: z.number().int().min(0).max(10).default(3),
  port: z.number().int().min(0).max(65535).default(8080),
  host: z.string().min(1).default('0.0.0.0'),
  task_timeout: seconds.default(30),
  max_body_bytes: z
    .number()
    .int()
    .positive()
    .default(1024 * 1024),
  oversized_body: oversizedBodySchema.prefault({}),
  /** The largest answer taken from a client (an HTTP body, a WebSocket message): a runaway agent must not exhaust the server's memory. */
  max_answer_bytes: z
    .number()
    .int()
    .positive()
    .default(16 * 1024 * 1024),
  require_task_token: z.boolean().default(true),
  client_ttl: seconds.default(90),
  /** Registered clients at most; past it a new node id is refused (503 too_many_clients), so a flood of ids cannot grow the server without bound. */
  max_clients: z.number().int().positive().default(100_000),
  health: healthSchema.prefault({}),
  routing: routingSchema.prefault({}),
  queue: queueSchema.prefault({}),
  ws: wsSchema.prefault({}),
  html: htmlSchema.prefault({}),
  region_hierarchy: hierarchySchema,
  agents: agentsSchema.prefault({}),
  http_agents: httpAgentsSchema.prefault({}),
  tasks: tasksSchema.prefault({}),
  log: logSchema.prefault({}),
  answers: z
    .object({
      /** Agent answer headers passed to the caller besides the defaults (content type, language, cache control, ETag, Last-Modified, X-*). */
      pass_headers: z.array(z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'must be a header name')).default([]),
    })
    .prefault({}),
  /** Proxies whose X-Forwarded-For is believed for the source address (heartbeats' own address, failed-login counts). */
  trusted_proxies: z.array(cidrSchema).default([]),
  // Cluster mode (src/cluster/): several instances sharing one fleet through Redis. Absent: one process, in memory.
  cluster: clusterSchema.optional(),
  // Security: TLS, HTTPS agents, signed calls to agents.
  tls: tlsSchema.optional(),
  signing_secret: signingSecretSchema.optional(),
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
  let text: string | undefined
  try {
    text = readAtMost(path, MAX_CONFIG_BYTES)
  } catch (error) {
    throw new ConfigError(`cannot read config ${path}: ${(error as Error).message}`)
  }
  if (text === undefined) throw new ConfigError(`config ${path} is too large (more than ${MAX_CONFIG_BYTES / (1024 * 1024)} MiB)`)
  let raw: unknown
  // A byte-order mark (Windows editors save UTF-8 with one) is not JSON, but no part of the config either.
  const json = text.replace(/^\uFEFF/, '')
  try {
    raw = JSON.parse(json)
  } catch (error) {
    // Bun's JSON.parse says what is wrong but not where: a person editing the file needs both.
    const at = syntaxErrorAt(json)
    const where = at === undefined ? '' : ` at line ${at.line}, column ${at.column}`
    throw new ConfigError(`config ${path} is not valid JSON${where}: ${(error as Error).message}`)
  }
  const loaded = parseConfig(raw, path)
  const { tokens_file } = loaded.config
  return tokens_file === undefined ? loaded : withTokens(loaded, readTokensFile(resolve(dirname(path), tokens_file)), 'tokens_file')
}

/** The file as UTF-8 text, or undefined if it holds more than `maxBytes`; reads one byte past the limit at most, whatever the file's size claims. */
export function readAtMost(path: string, maxBytes: number): string | undefined {
  const fd = openSync(path, 'r')
  try {
    const chunks: Buffer[] = []
    let total = 0
    while (total <= maxBytes) {
      const chunk = Buffer.allocUnsafe(Math.min(READ_CHUNK_BYTES, maxBytes + 1 - total))
      const read = readSync(fd, chunk, 0, chunk.length, null)
      if (read === 0) return Buffer.concat(chunks, total).toString('utf8')
      chunks.push(chunk.subarray(0, read))
      total += read
    }
    return undefined
  } finally {
    closeSync(fd)
  }
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
