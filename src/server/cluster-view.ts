import type { Cluster, InstanceInfo } from '../cluster/cluster.ts'
import type { ClusterView } from '../wire/views.ts'
import type { ServerContext } from './context.ts'

/** GET /cluster: every instance of the cluster, this one first (alone, just this one). */
export function clusterView(ctx: ServerContext, cluster: Cluster | undefined, own: { url: () => string; clients: () => number }): ClusterView {
  const { identity, clock } = ctx
  if (!cluster) {
    const self = {
      instance_id: identity.instanceId,
      advertise_url: own.url(),
      started_at: new Date(ctx.startedAtMs).toISOString(),
      refreshed_at: new Date(clock.now()).toISOString(),
    }
    return {
      mode: 'alone',
      instance_id: identity.instanceId,
      redis: null,
      redis_url: null,
      instances: [{ ...self, clients: own.clients(), in_flight: ctx.load.inFlight, self: true }],
    }
  }
  // The incarnation tells this process from a restarted twin inside Redis, and relay_batch how to relay to it; neither means anything to a reader.
  const shown = ({ incarnation: _incarnation, relay_batch: _relayBatch, ...info }: InstanceInfo, self: boolean) => ({ ...info, self })
  return {
    mode: 'cluster',
    instance_id: identity.instanceId,
    redis: cluster.redisUp ? 'up' : 'down',
    redis_url: cluster.redisUrl,
    instances: [shown(cluster.selfInfo(), true), ...cluster.peers().map((peer) => shown(peer, false))],
  }
}

/** GET /readyz: why this instance should get no traffic now, or undefined when it may. */
export function notReadyReason(ctx: ServerContext, cluster: Cluster | undefined): string | undefined {
  if (ctx.state.stopping) return 'the server is shutting down'
  if (!cluster) return undefined
  if (!ctx.state.joined) return 'joining the cluster (claiming the instance id, loading the shared view)'
  if (cluster.redisUp) return undefined
  const why = cluster.redisDownReason === undefined ? '' : `: ${cluster.redisDownReason}`
  return `the cluster store (Redis) cannot be reached${why}; serving degraded, without the shared view`
}
