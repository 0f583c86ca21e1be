import type { Hono } from 'hono'
import type { RegistrationDeps } from '../fleet/registration.ts'
import { type AppEnv, createApp } from '../http/app.ts'
import { createTaskRoute } from '../http/task-route.ts'
import { RandomTaskIds } from '../tasks/ids.ts'
import { VERSION } from '../version.ts'
import { WsGateway } from '../ws/gateway.ts'
import { clusterView, notReadyReason } from './cluster-view.ts'
import type { ServerContext } from './context.ts'
import type { FleetWiring } from './fleet-wiring.ts'
import type { ObserveWiring } from './observe-wiring.ts'
import type { TaskWiring } from './task-wiring.ts'

/** The edges callers and agents meet: registration, the WebSocket gateway, the Hono app and the task route. */
export interface EdgeWiring {
  gateway: WsGateway
  app: Hono<AppEnv>
  taskRoute: ReturnType<typeof createTaskRoute>
}

export function wireEdges(ctx: ServerContext, fleet: FleetWiring, observe: ObserveWiring, tasks: TaskWiring, ownUrl: () => string): EdgeWiring {
  const { settings, clock, log, load, state, identity } = ctx
  const { registry, membership, conflicts } = fleet
  const { wsTransport, httpTransport, cluster, slots, retryBudget, storedTasks, taskStore } = tasks
  const registration: RegistrationDeps = {
    settings,
    registry,
    clock,
    // Whether a WebSocket holder of a node id still lives: the gateway, built next, knows its sockets;
    // another instance's agent, its holder (asked over the relay).
    isAlive: (client) => (client.instance === undefined ? gateway.isAlive(client.nodeId) : (cluster?.isAlive(client) ?? Promise.resolve(false))),
    conflicts,
    onReplaced: (previous, replacement) => {
      // A WebSocket node replaced by another socket is closed by the gateway when it attaches the new one.
      if (previous.protocol === 'ws' && replacement.protocol === 'http') wsTransport.socketOf(previous.nodeId)?.close(4000, 'replaced by an HTTP registration')
    },
  }
  const gateway: WsGateway = new WsGateway({
    settings,
    registry,
    registration,
    transport: wsTransport,
    feed: observe.feed,
    clock,
    log,
    onBadMessage: (code) => observe.observations.onBadMessage(code),
  })
  // A probe from another instance asks whether an agent held here still answers.
  if (cluster) cluster.isAliveHere = (nodeId) => gateway.isAlive(nodeId)
  fleet.onRegistryEvent((event) => {
    if (event.client.route === 'ws' && event.type !== 'left') gateway.syncTopics(event.client.nodeId)
  })
  const { authFailures, report } = ctx
  const { eventLoopDelay, observations } = observe
  const app = createApp({
    settings,
    membership,
    registration,
    stats: observe.stats,
    clock,
    version: VERSION,
    startedAtMs: ctx.startedAtMs,
    inFlight: () => load.inFlight,
    wsConnections: () => gateway.sockets.size,
    metrics: {
      capacity: () => ({ queued: slots.depth, waits: slots.waits, shed: slots.shed, retriesRefused: retryBudget.refused }),
      httpAgentPools: () => httpTransport.figures(),
      authFailures: () => ({ failures: authFailures.failures, throttled: authFailures.throttled }),
      observations,
      tracing: () => observe.tracing.exporter.figures,
      process: () => ({ residentBytes: process.memoryUsage.rss(), eventLoopDelayWorstS: eventLoopDelay.worstS, eventLoopDelayMeanS: eventLoopDelay.meanS }),
      ...(cluster
        ? {
            cluster: () => ({
              redisUp: cluster.redisUp,
              instances: cluster.peers().length + 1,
              relayed: cluster.relay.relayed,
              relaysPending: cluster.relay.pending,
              relayMessages: { tasks: cluster.relay.published, replies: cluster.replies.published },
            }),
          }
        : {}),
    },
    isStopping: () => state.stopping,
    report,
    cluster: () => clusterView(ctx, cluster, { url: ownUrl, clients: () => registry.localCount() }),
    storedTasks,
    notReady: () => notReadyReason(ctx, cluster),
    taskFigures: () => taskStore.figures(clock.now()),
    operator: {
      registry,
      clientTasks: observe.clientTasks,
      log,
      closeSocket: (nodeId, code, reason) => wsTransport.socketOf(nodeId)?.close(code, reason),
      instanceUrl: (id) => cluster?.peers().find((peer) => peer.instance_id === id)?.advertise_url,
    },
  })
  const taskRoute = createTaskRoute({
    settings,
    dispatcher: tasks.dispatcher,
    broadcaster: tasks.broadcaster,
    taskIds: new RandomTaskIds(),
    tracer: observe.tracing.tracer,
    storedTasks,
    now: () => clock.now(),
    clientRegion: (nodeId) => registry.get(nodeId)?.region,
    isStopping: () => state.stopping,
    report,
    ...(cluster ? { instanceId: () => identity.instanceId } : {}),
  })
  return { gateway, app, taskRoute }
}
