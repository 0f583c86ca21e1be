import type { Hono } from 'hono'
import { register } from '../fleet/registration.ts'
import { type HeartbeatReply, heartbeatSchema } from '../wire/agent-hello.ts'
import type { ClientList } from '../wire/views.ts'
import type { AppDeps, AppEnv } from './app.ts'
import { authorize, clientAddress, readJsonBody } from './request-checks.ts'

/** The fleet's routes: an HTTP agent's heartbeat, the clients (a monitor token) and the regions' tree. */
export function mountFleetRoutes(app: Hono<AppEnv>, deps: AppDeps): void {
  const { settings, membership } = deps
  app.post('/client/heartbeat', async (c) => {
    const hello = await readJsonBody(c.req.raw, settings.config, heartbeatSchema)
    const sourceIp = clientAddress(settings, c.env, c.req.raw)
    const client = await register(deps.registration, hello, { protocol: 'http', sourceIp })
    const reply: HeartbeatReply = {
      status: 'ok',
      server_time: new Date(deps.clock.now()).toISOString(),
      node_id: client.nodeId,
      region: client.region,
      weight: client.weight,
      client_ttl: settings.config.client_ttl,
    }
    return c.json(reply)
  })

  app.get('/clients', (c) => {
    authorize(settings, c.req.raw, c.env, 'monitor')
    const list: ClientList = { clients: membership.views() }
    return c.json(list)
  })

  app.get('/regions', (c) => c.json(settings.regions.tree(membership.regionCounts())))
}
