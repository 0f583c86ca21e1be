import { type ClientList, fetchClients, VIEW_TIMEOUT_S } from '../api-client.ts'
import { type Command, type Env, readViewArgs, UsageError } from './_command.ts'
import { colourOn, duration, printJson, red, table } from './_output.ts'

export const clientsCommand: Command = {
  summary: 'list the connected clients (agents)',
  usage: `moonlight clients [--server URL] [--token T] [--ca FILE] [--timeout S] [--json]

Lists every client the server knows (GET /clients): region, protocol, address, weight, health,
tasks in flight (of its slots, "2/4", when it announced max_in_flight), successes, failures, latency and when it was last heard from.

  --server URL   the server's base URL (default $MLS_SERVER, else http://localhost:8080)
  --token T      a token (default $MLS_TOKEN); required
  --ca FILE      a PEM CA bundle to verify an https:// server against (default $MLS_CA)
  --timeout S    give up after S seconds (default ${VIEW_TIMEOUT_S})
  --json         print the list as JSON instead`,
  run: async (args: string[], env: Env) => {
    const { target, timeoutMs, json } = readViewArgs(args, env)
    if (!target.token) throw new UsageError('GET /clients needs a token: pass --token or set MLS_TOKEN')
    const list = await fetchClients(target, timeoutMs)
    if (json) printJson(list)
    else console.log(describeClients(list, Date.now(), colourOn(env)))
  },
}

function describeClients(list: ClientList, nowMs: number, colour: boolean): string {
  if (list.clients.length === 0) return 'no clients connected'
  const rows = [...list.clients]
    .sort((a, b) => a.region.localeCompare(b.region) || a.node_id.localeCompare(b.node_id))
    .map((client) => [
      client.node_id,
      client.region,
      client.protocol,
      client.protocol === 'http' ? `${client.ip}:${client.port}` : client.ip,
      // While it ramps up (health.slow_start): the share the balancer gives it now.
      client.effective_weight === undefined ? String(client.weight) : `${client.weight} (now ${Math.round(client.effective_weight * 100) / 100})`,
      // Failing: kept in service only by the ejection cap, and as alarming as an ejection.
      client.state === 'failing' || client.state === 'ejected' ? red(stateText(client), colour) : stateText(client),
      // Its slots, when it announced them: "in flight/max", as full as it looks.
      client.max_in_flight === undefined ? String(client.in_flight) : `${client.in_flight}/${client.max_in_flight}`,
      String(client.successes),
      String(client.failures),
      `${client.latency_ms} ms`,
      `${duration((nowMs - Date.parse(client.last_seen)) / 1000)} ago`,
    ])
  return table([['NODE', 'REGION', 'PROTOCOL', 'ADDRESS', 'WEIGHT', 'STATE', 'IN-FLIGHT', 'OK', 'FAILED', 'LATENCY', 'LAST SEEN'], ...rows])
}

function stateText(client: ClientList['clients'][number]): string {
  return client.draining ? `${client.state} (draining)` : client.state
}
