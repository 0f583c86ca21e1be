import type { Clock } from './clock.ts'
import { tooManyClients } from './errors.ts'
import type { Client, Registry } from './registry.ts'
import type { Settings } from './settings.ts'
import type { ClientHello } from './wire/agent-hello.ts'
import type { Protocol } from './wire/names.ts'

export interface RegistrationDeps {
  settings: Settings
  registry: Registry
  clock: Clock
  /** The node registered anew over another connection or address: the old connection must go. */
  onReplaced: (previous: Client, replacement: Client) => void
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
export function register(deps: RegistrationDeps, hello: ClientHello, source: HelloSource): Client {
  const { settings, registry } = deps
  settings.access.authorize({ token: hello.token, address: () => source.sourceIp, from: 'message' }, 'agent', hello.region)
  if (!registry.hasRoomFor(hello.node_id)) throw tooManyClients(settings.config.max_clients)
  const { client, previous } = registry.announce(
    {
      nodeId: hello.node_id,
      region: hello.region,
      protocol: source.protocol,
      ip: hello.ip ?? source.sourceIp,
      port: hello.port ?? 0,
      weight: hello.weight ?? 1,
    },
    deps.clock.now(),
    source.connectionId,
  )
  if (previous) deps.onReplaced(previous, client)
  return client
}
