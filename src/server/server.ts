import type { Clock } from '../clock.ts'
import { systemClock } from '../clock.ts'
import type { Cluster } from '../cluster/cluster.ts'
import type { LoadedConfig } from '../config/config.ts'
import type { Settings } from '../config/settings.ts'
import type { Registry } from '../fleet/registry.ts'
import { MemoryTaskStore } from '../tasks/stored/store.ts'
import { createContext } from './context.ts'
import { wireEdges } from './edge-wiring.ts'
import { wireFleet } from './fleet-wiring.ts'
import { Housekeeping, housekeepingJobs } from './housekeeping.ts'
import { reload, stop, type Wired } from './lifecycle.ts'
import { listenOn } from './listening.ts'
import { wireObservation } from './observe-wiring.ts'
import { wireTasks } from './task-wiring.ts'

export interface ServerOptions {
  loaded: LoadedConfig
  /** Overrides the config's port (0 picks a free one). */
  port?: number
  host?: string
  log?: (line: string) => void
  /** Time for everything but Bun's own sockets; tests pass a fake one. */
  clock?: Clock
  /** This instance's name among others (a cluster's instance_id); the host name and port by default. */
  instanceId?: string
  /** The token to use while none is configured (serve: the one kept for the next start); asked at most once. A random one by default. */
  generatedToken?: () => string
}

export interface MoonlightServer {
  readonly url: string
  readonly port: number
  readonly settings: Settings
  readonly registry: Registry
  /** The cluster this instance is part of, if the config has one (src/cluster/cluster.ts). */
  readonly cluster: Cluster | undefined
  /** Resolves once the server is ready: at once alone; in a cluster, once it has claimed its instance id (rejects if another instance has it). */
  readonly ready: Promise<void>
  /** Every route it answers (method and path, `:name` for a path parameter): what /openapi.json must describe. */
  routes(): Array<{ method: string; path: string }>
  /** Applies a new config: tokens, hierarchy, retries, timeouts and health; clients stay connected. */
  reload(loaded: LoadedConfig): void
  /** Answers new requests 503 while in-flight tasks finish (up to `graceMs`), then stops listening and closes WebSockets with 1001. */
  stop(graceMs?: number): Promise<void>
}

/**
 * Starts Moonlight: wiring only, in the order things depend on each other — the shared context, the
 * fleet, what observes it, how tasks reach agents, the edges callers and agents meet — then listens,
 * settles this instance's identity (a default names the port) and starts the periodic jobs.
 */
export function startServer(options: ServerOptions): MoonlightServer {
  const clock = options.clock ?? systemClock
  const ctx = createContext({ ...options, clock })
  const { started, identity } = ctx
  const fleet = wireFleet(ctx)
  const observe = wireObservation(ctx, fleet)
  const tasks = wireTasks(ctx, fleet, observe)
  const edges = wireEdges(ctx, fleet, observe, tasks, () => url)
  const listeners = listenOn(ctx, edges, { port: options.port ?? started.port, host: options.host ?? started.host, certificate: tasks.tls.files.certificate })
  ctx.publish = (topic, message) => listeners.publish(topic, message)

  const { hostname: listeningHost, port: listeningPort = 0 } = listeners.server
  const tls = tasks.tls.files.certificate !== undefined
  identity.settle(listeningPort, tls)
  const url = `${tls ? 'https' : 'http'}://${listeningHost === '0.0.0.0' ? 'localhost' : listeningHost}:${listeningPort}`

  const { taskStore } = tasks
  const housekeeping = new Housekeeping(
    clock,
    () =>
      housekeepingJobs({
        config: () => ctx.settings.config,
        registry: fleet.registry,
        sockets: edges.gateway,
        flushFeed: () => {
          observe.feed.flush()
          edges.gateway.watchMonitors()
        },
        ...(taskStore instanceof MemoryTaskStore ? { sweepStore: (nowMs: number) => taskStore.sweep(nowMs) } : {}),
      }),
    ctx.log,
  )
  housekeeping.start()
  const wired: Wired = { ctx, fleet, observe, tasks, edges, listeners, housekeeping }
  const { ws } = started
  return {
    url,
    port: listeningPort,
    settings: ctx.settings,
    registry: fleet.registry,
    cluster: tasks.cluster,
    // The queue is read once the instance id is settled (it names this instance's claims).
    ready: (tasks.cluster ? tasks.cluster.start() : Promise.resolve()).then(() => {
      ctx.state.joined = true
      tasks.storedTasks.start()
    }),
    routes: () => [
      { method: 'POST', path: '/task/request' },
      ...(ws.enabled ? [{ method: 'GET', path: ws.path }] : []),
      // Middleware (app.use) is listed as ALL; only real routes count.
      ...edges.app.routes.filter((route) => route.method !== 'ALL').map(({ method, path }) => ({ method, path })),
    ],
    reload: (loaded) => reload(wired, loaded),
    stop: (graceMs = Math.min(ctx.settings.config.task_timeout * 1000, 10_000)) => stop(wired, graceMs),
  }
}
