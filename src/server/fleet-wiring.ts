import { healthPolicy } from '../config/settings.ts'
import { LocalMembership } from '../fleet/membership.ts'
import { NodeConflicts } from '../fleet/refused-claims.ts'
import { Registry, type RegistryEvent } from '../fleet/registry.ts'
import { describeEvent } from '../observe/event-lines.ts'
import type { ServerContext } from './context.ts'

/** The fleet: every client, who holds which node id, and who hears of each change. */
export interface FleetWiring {
  registry: Registry
  /** Parts wired later (the feed, the cluster, the gateway) listen here, in the order they subscribe. */
  onRegistryEvent: (listener: (event: RegistryEvent) => void) => void
  /** Refused claims of a live node id, shown on the holder for a while. */
  conflicts: NodeConflicts
  membership: LocalMembership
}

export function wireFleet(ctx: ServerContext): FleetWiring {
  const { clock, log, started } = ctx
  const listeners: Array<(event: RegistryEvent) => void> = []
  const registry = new Registry(ctx.settings.regions, healthPolicy(started), (event) => {
    for (const listener of listeners) listener(event)
    const { client } = event
    log(describeEvent(event), {
      level: event.type === 'state' && (client.state === 'ejected' || client.state === 'failing') ? 'warn' : 'info',
      fields: { node_id: client.nodeId, region: client.region, protocol: client.protocol },
    })
  })
  registry.maxClients = started.max_clients
  registry.balance = started.routing.balance
  const conflicts = new NodeConflicts({
    log,
    now: () => clock.now(),
    forgetMs: () => ctx.settings.config.client_ttl * 2 * 1000,
  })
  const membership = new LocalMembership(registry, () => ctx.identity.instanceId, started.cluster !== undefined, conflicts)
  return { registry, onRegistryEvent: (listener) => listeners.push(listener), conflicts, membership }
}
