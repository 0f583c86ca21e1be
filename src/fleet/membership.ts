import type { ClientView, RegionCounts } from '../wire/views.ts'
import type { NodeConflicts } from './refused-claims.ts'
import { type Client, clientView, type Registry } from './registry.ts'

/**
 * Which clients exist and which process holds each one's connection (a view's `instance`, in a
 * cluster): what /clients, /status, /regions, /metrics and the dashboard read. Alone, every client
 * is held here; in a cluster the registry also holds the other instances' clients as remote records
 * (src/cluster/cluster.ts), so the same LocalMembership answers for the whole fleet.
 */
export interface Membership {
  readonly size: number
  get(nodeId: string): Client | undefined
  all(): Iterable<Client>
  views(): ClientView[]
  /** One client's view, as views() shows it. */
  view(client: Client): ClientView
  /** Per region where clients registered: how many, and how many can take tasks now. */
  regionCounts(): Map<string, RegionCounts>
}

/** Membership of one process: the registry's clients, all held by this instance. */
export class LocalMembership implements Membership {
  constructor(
    private readonly registry: Registry,
    /** This instance's id: settled once the server listens (a default id names the port it got). */
    private readonly instanceId: () => string,
    /** In a cluster, views name each client's instance. */
    private readonly clustered = false,
    /** Node ids another live agent claims: shown on the holder's view. */
    private readonly conflicts?: NodeConflicts,
  ) {}

  get size(): number {
    return this.registry.size
  }

  get(nodeId: string): Client | undefined {
    return this.registry.get(nodeId)
  }

  all(): Iterable<Client> {
    return this.registry.all()
  }

  views(): ClientView[] {
    return Array.from(this.registry.all(), (client) => this.view(client))
  }

  view(client: Client): ClientView {
    const view = clientView(client, this.clustered ? this.instanceId() : undefined)
    const conflict = this.conflicts?.view(client.nodeId)
    return conflict === undefined ? view : { ...view, conflict }
  }

  regionCounts(): Map<string, RegionCounts> {
    return this.registry.regionCounts()
  }
}
