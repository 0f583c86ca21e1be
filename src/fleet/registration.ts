import type { Clock } from '../clock.ts'
import type { Settings } from '../config/settings.ts'
import { MoonlightError, tooManyClients } from '../errors.ts'
import { agentAddress, type Resolve } from '../security/agent-call-address.ts'
import type { ClientHello, Heartbeat } from '../wire/agent-hello.ts'
import type { Protocol } from '../wire/names.ts'
import { type Claim, claimVerdict } from './node-claims.ts'
import type { NodeConflicts } from './refused-claims.ts'
import type { Client, Registry } from './registry.ts'

export interface RegistrationDeps {
  settings: Settings
  registry: Registry
  clock: Clock
  /** The node registered anew over another connection or address: the old connection must go. */
  onReplaced: (previous: Client, replacement: Client) => void
  /** How host names are resolved (node:dns unless a test says otherwise). */
  resolve?: Resolve
  /** Whether a WebSocket client still answers (a ping, briefly awaited): a live holder keeps its node id. */
  isAlive: (client: Client) => Promise<boolean>
  conflicts: NodeConflicts
}

/** Where a hello came from: the HTTP heartbeat, or a WebSocket `register` on one connection. */
export interface HelloSource {
  protocol: Protocol
  /** The peer's address, used when the hello names no `ip`. */
  sourceIp: string
  /** The WebSocket connection the node speaks over (its current one, if it registered on it before). */
  connectionId?: number
}

/**
 * Registers or refreshes a client, the one way for both transports: the token must hold the agent
 * role for the hello's region and a new node id needs room under max_clients. Throws the refusal as a MoonlightError.
 */
export async function register(deps: RegistrationDeps, hello: ClientHello & Partial<Pick<Heartbeat, 'scheme'>>, source: HelloSource): Promise<Client> {
  const { settings, registry } = deps
  const { holder } = settings.access.authorize({ token: hello.token, address: () => source.sourceIp, from: 'message' }, 'agent', hello.region)
  if (!registry.hasRoomFor(hello.node_id)) throw tooManyClients(settings.config.max_clients)
  // The server calls an HTTP agent at this address: it must be one the agent may be at. A WebSocket
  // agent is never called at an address: its `ip` and `port` (the original's clients send a made-up
  // 192.168.1.100:3000) would only mislead who reads /clients, so it is shown where its socket comes
  // from, with no port (port 0 here, null in the view).
  const ip = source.protocol === 'http' ? await agentAddress(hello.ip, source.sourceIp, settings.allowedNetworks, deps.resolve) : source.sourceIp
  const port = source.protocol === 'http' ? (hello.port ?? 0) : 0
  const claim: Claim = { holder, protocol: source.protocol, ip, port, connectionId: source.connectionId }
  // An HTTP agent is told apart by its port too: two on one host share the address.
  await checkClaim(deps, hello.node_id, claim, source.protocol === 'http' ? `${ip}:${claim.port}` : source.sourceIp)
  const { client, previous } = registry.announce(
    {
      holder: claim.holder,
      nodeId: hello.node_id,
      region: hello.region,
      protocol: source.protocol,
      ip,
      port,
      scheme: hello.scheme,
      weight: hello.weight ?? 1,
      maxInFlight: hello.max_in_flight,
    },
    deps.clock.now(),
    source.connectionId,
  )
  if (previous) deps.onReplaced(previous, client)
  return client
}

/** Throws 409 `node_id_in_use` unless the claim may take the node id (see src/fleet/node-claims.ts). */
async function checkClaim(deps: RegistrationDeps, nodeId: string, claim: Claim, claimantAddress: string): Promise<void> {
  const { registry, clock, settings } = deps
  const existing = registry.get(nodeId)
  // Two missed heartbeats at the ready-made agent's rhythm (a third of client_ttl).
  const silenceMs = (settings.config.client_ttl * 2 * 1000) / 3
  let verdict = claimVerdict(existing, claim, clock.now(), silenceMs)
  if (verdict === 'probe') verdict = (await deps.isAlive(existing!)) ? 'held' : 'takeover'
  // The holder may have left while it was asked.
  if (verdict === 'takeover' || verdict === 'new' || verdict === 'same' || !existing || registry.get(nodeId) !== existing) return
  if (verdict === 'other_token') throw new MoonlightError(409, 'node_id_in_use', `node_id "${nodeId}" is held by another token`)
  deps.conflicts.report(nodeId, existing.protocol === 'http' ? `${existing.ip}:${existing.port}` : existing.ip, claimantAddress)
  throw new MoonlightError(
    409,
    'node_id_in_use',
    `node_id "${nodeId}" is in use by a live ${existing.protocol} agent; give each agent its own node id (moonlight agent --node-id)`,
  )
}
