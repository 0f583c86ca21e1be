import { ConfigError, type LoadedConfig } from '../config/config.ts'
import { planReload } from '../config/reload.ts'
import { healthPolicy, makeSettings } from '../config/settings.ts'
import { type CertificatePair, describeCertificate, readConfiguredTls } from '../security/pem-files.ts'
import type { SocketData } from '../transports/ws.ts'
import type { ServerContext } from './context.ts'
import type { EdgeWiring } from './edge-wiring.ts'
import type { FleetWiring } from './fleet-wiring.ts'
import type { Housekeeping } from './housekeeping.ts'
import type { Listeners } from './listeners.ts'
import { warnOfCertificateDates } from './listening.ts'
import type { ObserveWiring } from './observe-wiring.ts'
import type { TaskWiring } from './task-wiring.ts'

/** Everything a reload or a stop reaches. */
export interface Wired {
  ctx: ServerContext
  fleet: FleetWiring
  observe: ObserveWiring
  tasks: TaskWiring
  edges: EdgeWiring
  listeners: Listeners<SocketData>
  housekeeping: Housekeeping
}

/** Applies a new config: tokens, hierarchy, retries, timeouts and health; clients stay connected. */
export function reload(wired: Wired, loaded: LoadedConfig): void {
  const { ctx, fleet, tasks, edges } = wired
  const { settings, log } = ctx
  const { registry } = fleet
  const plan = planReload(ctx.started, loaded.config)
  // Read before anything changes: a bad file rejects the whole reload, and the certificate served stays.
  const nextTls = readConfiguredTls(plan.config)
  if (nextTls.certificate) renewCertificate(wired, nextTls.certificate, plan.config.tls?.cert ?? '')
  tasks.tls.files = nextTls
  if (plan.atNextStart.length > 0) log(`[mls] reload: ${plan.atNextStart.join(', ')} take effect at the next start`)
  Object.assign(settings, makeSettings(plan.config, { externalTokens: loaded.externalTokens, failures: ctx.authFailures, generatedToken: ctx.generatedToken }))
  // Tokens apply at once, to what they already let in: a client this instance holds whose token was
  // revoked (or lost the agent role or its region) leaves now — a WebSocket agent sends its token
  // only in register, and an HTTP agent would otherwise take tasks until client_ttl — and a
  // dashboard whose token lost the monitor role stops watching. Both sockets close as a refused token's does.
  // Before the new region tree applies: placing clients under it hands waiting tasks to those with
  // free slots, and a revoked one must not take one on its way out.
  for (const client of [...registry.all()]) {
    if (client.instance !== undefined || settings.access.digestHolds(client.holder, 'agent', client.region)) continue
    registry.remove(client.nodeId, 'its token was revoked')
    if (client.protocol === 'ws') tasks.wsTransport.socketOf(client.nodeId)?.close(1008, 'token revoked')
  }
  registry.reconfigure(settings.regions, healthPolicy(settings.config))
  edges.gateway.closeMonitors((holder) => !settings.access.digestHolds(holder, 'monitor'), 'token revoked')
  registry.maxClients = settings.config.max_clients
  registry.balance = settings.config.routing.balance
  for (const client of registry.all()) if (client.protocol === 'ws') edges.gateway.syncTopics(client.nodeId)
  // The periods of the periodic jobs come from the config.
  wired.housekeeping.start()
  log(`[mls] config reloaded from ${loaded.source}`)
}

/** New connections get `certificate` from now on (if it is a new one); connections already open keep theirs. */
function renewCertificate(wired: Wired, certificate: CertificatePair, certPath: string): void {
  let renewed: boolean
  try {
    renewed = wired.listeners.renew(certificate)
  } catch (error) {
    throw new ConfigError(`cannot listen with the new certificate, the previous one stays: ${(error as Error).message}`)
  }
  if (!renewed) return
  wired.ctx.log(`[mls] TLS: renewed, new connections get ${describeCertificate(certificate)}`)
  warnOfCertificateDates(wired.ctx.log, certificate, certPath)
}

/** Answers new requests 503 while in-flight tasks finish (up to `graceMs`), then stops listening and closes WebSockets with 1001. */
export async function stop(wired: Wired, graceMs: number): Promise<void> {
  const { ctx, tasks, edges, listeners } = wired
  const { load, state } = ctx
  if (state.stopping) return
  // The listener stays open through the grace period: Bun's stop(false) closes idle keep-alive
  // connections at once, and a request already on its way over one would be lost (a reset).
  // Until then every new request gets refuseWhileStopping's answer instead.
  state.stopping = true
  // Tasks waiting for a slot are answered now: the agents they wait for may be the ones going away.
  tasks.slots.close()
  // No task is claimed any more: in a cluster the queued ones wait for the other instances.
  tasks.storedTasks.stop()
  // In a cluster the others stop sending here at once, rather than when the presence expires.
  await tasks.cluster?.withdraw()
  const deadline = Date.now() + graceMs
  // In a cluster, the tasks other instances relayed to the agents held here are finished too.
  while ((load.inFlight > 0 || (tasks.cluster?.delivering ?? 0) > 0) && Date.now() < deadline) await Bun.sleep(20)
  // Leaving before the deadlines fire: what was relayed here and is not done fails over at the origins
  // (lost, as a disconnect is), rather than answering them a timeout their callers would get.
  await tasks.cluster?.leave()
  // Grace is over: whatever still waits answers 503 now, rather than losing its connection unanswered.
  load.closing = true
  tasks.deadlines.expireAll()
  // Stops listening and closes idle connections; busy ones close once their answer is sent.
  listeners.stopListening()
  const flushDeadline = Date.now() + 2000
  while (listeners.pendingRequests > 0 && Date.now() < flushDeadline) await Bun.sleep(10)
  wired.housekeeping.stop()
  wired.observe.eventLoopDelay.stop()
  edges.gateway.closeAll(1001, 'server shutting down')
  tasks.cluster?.stop()
  tasks.httpTransport.close()
  // The last spans go out, for a bounded time: a collector that is down must not hold up the stop.
  await Promise.race([wired.observe.tracing.exporter.flush(), Bun.sleep(2000)])
  wired.observe.tracing.exporter.close()
  await listeners.close()
}
