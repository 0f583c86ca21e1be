import type { Context, Hono } from 'hono'
import type { Clock } from '../clock.ts'
import type { Settings } from '../config/settings.ts'
import { MoonlightError } from '../errors.ts'
import type { Membership } from '../fleet/membership.ts'
import type { Client, Registry } from '../fleet/registry.ts'
import type { Log } from '../observe/logger.ts'
import type { ClientTasks } from '../observe/task-stats.ts'
import { tokenDigest } from '../security/access.ts'
import { nestingDepth } from '../wire/json-text.ts'
import { nameSchema } from '../wire/names.ts'
import { type ClientActionReply, type ClientDetail, ejectRequestSchema } from '../wire/views.ts'
import type { AppEnv } from './app.ts'
import type { BodyLimits } from './oversized-body.ts'
import { authorize, limitDepth, parseJson, readJsonText, requestToken, validate } from './request-checks.ts'

export interface OperatorDeps {
  settings: Settings
  membership: Membership
  registry: Registry
  clock: Clock
  clientTasks: ClientTasks
  log: Log
  /** Closes a forgotten WebSocket client's connection: a socket left open would be an agent the server no longer knows. */
  closeSocket: (nodeId: string, code: number, reason: string) => void
  /** Where another instance of the cluster answers (its advertise_url), for a 409 about a client it holds. */
  instanceUrl: (instanceId: string) => string | undefined
}

/** The close code a forgotten WebSocket client gets: an agent that reconnects registers afresh. */
export const FORGOTTEN_CLOSE_CODE = 4003

/**
 * Operator actions on one client, with the admin role: drain and undrain (no new tasks, as weight 0,
 * and back), eject (for a while, as health does) and forget (remove it); and, with the monitor role,
 * its detail with its recent tasks. In a cluster only the instance holding a client acts on it: the
 * others answer 409 `held_elsewhere` naming the holder, rather than relay, because a change made
 * here would be undone by the holder's next announcement of the client (it alone sees the agent).
 */
export function mountOperatorRoutes(app: Hono<AppEnv>, deps: OperatorDeps): void {
  const { settings } = deps

  app.get('/clients/:node_id', (c) => {
    authorize(settings, c.req.raw, c.env, 'monitor')
    const client = known(deps, c.req.param('node_id'))
    const detail: ClientDetail = { client: deps.membership.view(client), tasks: deps.clientTasks.of(client.nodeId) }
    return c.json(detail)
  })

  const action = (name: string, act: (client: Client, request: Request) => Promise<string> | string) => async (c: Context<AppEnv, '/clients/:node_id'>) => {
    authorize(settings, c.req.raw, c.env, 'admin')
    const client = held(deps, known(deps, c.req.param('node_id')))
    const done = await act(client, c.req.raw)
    // Which token acted, as the start of its digest (never the token): several operators may share a server.
    deps.log(`[mls] operator: ${done} ${client.protocol} client ${client.nodeId} (${client.region})`, {
      level: 'warn',
      fields: { action: name, node_id: client.nodeId, region: client.region, by: tokenDigest(requestToken(c.req.raw.headers)).slice(0, 12) },
    })
    return c.json(name === 'forget' ? { forgotten: client.nodeId } : ({ client: deps.membership.view(client) } satisfies ClientActionReply))
  }

  app.post(
    '/clients/:node_id/drain',
    action('drain', (client) => {
      deps.registry.setOperatorDrained(client.nodeId, true)
      return 'drained'
    }),
  )
  app.post(
    '/clients/:node_id/undrain',
    action('undrain', (client) => {
      deps.registry.setOperatorDrained(client.nodeId, false)
      return 'undrained'
    }),
  )
  app.post(
    '/clients/:node_id/eject',
    action('eject', async (client, request) => {
      const { seconds } = await readOptionalBody(request, settings.config)
      const ms = seconds === undefined ? settings.config.health.ejection_time * 1000 : seconds * 1000
      deps.registry.eject(client.nodeId, deps.clock.now(), ms)
      return `ejected for ${ms / 1000} s`
    }),
  )
  app.delete(
    '/clients/:node_id',
    action('forget', (client) => {
      deps.registry.forget(client.nodeId, 'forgotten by an operator')
      if (client.protocol === 'ws') deps.closeSocket(client.nodeId, FORGOTTEN_CLOSE_CODE, 'forgotten by an operator')
      return 'forgot'
    }),
  )
}

/** The client of that node id; 404 `unknown_node` if there is none (or the id could not be one). */
function known(deps: OperatorDeps, nodeId: string): Client {
  const client = nameSchema.safeParse(nodeId).success ? deps.membership.get(nodeId) : undefined
  if (!client) throw new MoonlightError(404, 'unknown_node', `no client has node_id "${nodeId.slice(0, 128)}"`, { node_id: nodeId.slice(0, 128) })
  return client
}

/** The client if this instance holds it; 409 `held_elsewhere` naming the instance that does. */
function held(deps: OperatorDeps, client: Client): Client {
  if (client.instance === undefined) return client
  const url = deps.instanceUrl(client.instance)
  throw new MoonlightError(
    409,
    'held_elsewhere',
    `client "${client.nodeId}" is held by instance ${client.instance}${url ? ` (${url})` : ''}: send the action there`,
    { node_id: client.nodeId, instance: client.instance, ...(url ? { advertise_url: url } : {}) },
  )
}

/** The eject body, which may be absent: `{}` then. */
async function readOptionalBody(request: Request, limits: BodyLimits) {
  const length = request.headers.get('content-length')
  if (length === '0' || (length === null && request.body === null)) return {}
  const text = await readJsonText(request, limits)
  if (text.trim() === '') return {}
  const value = parseJson(text)
  limitDepth(nestingDepth(text))
  return validate(ejectRequestSchema, value)
}
