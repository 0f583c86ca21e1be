import type { Clock } from './clock.ts'
import { MoonlightError, tooManyClients } from './errors.ts'
import type { Client, Registry } from './registry.ts'
import type { Settings } from './settings.ts'
import type { ClientHello, Heartbeat } from './wire/agent-hello.ts'
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
 * Registers or refreshes a client, the one way for both transports: the token must be one of the
 * configured ones and a new node id needs room under max_clients. Throws the refusal as a MoonlightError.
 */
export function register(deps: RegistrationDeps, hello: ClientHello & Partial<Pick<Heartbeat, 'scheme'>>, source: HelloSource): Client {
  const { settings, registry } = deps
  if (!settings.tokens.has(hello.token)) throw new MoonlightError(401, 'unauthorized', 'invalid token')
  if (!registry.hasRoomFor(hello.node_id)) throw tooManyClients(settings.config.max_clients)
  const { client, previous } = registry.announce(
    {
      nodeId: hello.node_id,
      region: hello.region,
      protocol: source.protocol,
      ip: hello.ip ?? source.sourceIp,
      port: hello.port ?? 0,
      scheme: hello.scheme,
      weight: hello.weight ?? 1,
    },
    deps.clock.now(),
    source.connectionId,
  )
  if (previous) deps.onReplaced(previous, client)
  return client
}
