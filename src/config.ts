import { existsSync, readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { z } from 'zod'

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
    register_timeout: seconds.default(10),
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
})

const hierarchySchema = z
  .record(z.string().min(1), z.string().min(1))
  .default({})
  .superRefine((hierarchy, ctx) => {
    if ('global' in hierarchy) ctx.addIssue({ code: 'custom', path: ['global'], message: '"global" is the root and cannot have a parent' })
    for (const start of Object.keys(hierarchy)) {
      const seen = new Set<string>()
      for (let region: string | undefined = start; region !== undefined; region = hierarchy[region]) {
        if (seen.has(region)) {
          ctx.addIssue({ code: 'custom', path: [start], message: `cycle in the hierarchy: ${[...seen, region].join(' -> ')}` })
          return
        }
        seen.add(region)
      }
    }
  })

export const configSchema = z.object({
  note: z.string().optional(),
  tokens: z.array(z.string().min(8, 'tokens must be at least 8 characters')).default([]),
  retry_count: z.number().int().min(0).max(10).default(3),
  port: z.number().int().min(0).max(65535).default(8080),
  host: z.string().min(1).default('0.0.0.0'),
  task_timeout: seconds.default(30),
  max_body_bytes: z
    .number()
    .int()
    .positive()
    .default(1024 * 1024),
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
  ws: wsSchema.prefault({}),
  html: htmlSchema.prefault({}),
  region_hierarchy: hierarchySchema,
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
}

/** Validates a parsed config object; throws ConfigError naming each bad key. */
export function parseConfig(raw: unknown, source: string): LoadedConfig {
  const result = configSchema.safeParse(raw)
  if (!result.success) {
    const problems = result.error.issues.map((issue) => `  ${issue.path.join('.') || '(top level)'}: ${issue.message}`)
    throw new ConfigError(`invalid config ${source}:\n${problems.join('\n')}`)
  }
  return { config: result.data, source, unknownKeys: unknownKeys(configSchema, raw) }
}

/** Reads and validates one config file. */
export function readConfigFile(path: string): LoadedConfig {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (error) {
    throw new ConfigError(`cannot read config ${path}: ${(error as Error).message}`)
  }
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch (error) {
    throw new ConfigError(`config ${path} is not valid JSON: ${(error as Error).message}`)
  }
  return parseConfig(raw, path)
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
 * Loads the first config found. An explicitly named file (--config or $MLS_CONFIG) must exist;
 * the well-known places are optional and fall through to the embedded default.
 */
export function loadConfig(places: SearchPlaces = {}): LoadedConfig {
  const env = places.env ?? process.env
  const explicit = places.explicitPath ?? env.MLS_CONFIG
  if (explicit) return readConfigFile(explicit)
  for (const path of configCandidates(places)) {
    if (existsSync(path)) return readConfigFile(path)
  }
  return parseConfig(EMBEDDED_DEFAULT, 'embedded default')
}

function unknownKeys(schema: z.ZodType, raw: unknown, prefix = ''): string[] {
  const shape = objectShape(schema)
  if (!shape || typeof raw !== 'object' || raw === null || Array.isArray(raw)) return []
  const found: string[] = []
  for (const [key, value] of Object.entries(raw)) {
    const child = shape[key]
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
