import { fetchStatus, type Status, VIEW_TIMEOUT_S } from '../api-client.ts'
import { type Command, caOf, type Env, noPositionals, optionalSeconds, parse, serverUrl } from './_command.ts'
import { colourOn, duration, printJson, red, table } from './_output.ts'

export const statusCommand: Command = {
  summary: "show the server's status and clients per region",
  usage: `moonlight status [--server URL] [--ca FILE] [--timeout S] [--json]

Shows GET /status as a table: the server, WebSocket, tasks, and clients per region with their health.

  --server URL   the server's base URL (default $MLS_SERVER, else http://localhost:8080)
  --ca FILE      a PEM CA bundle to verify an https:// server against (default $MLS_CA)
  --timeout S    give up after S seconds (default ${VIEW_TIMEOUT_S})
  --json         print the status as JSON instead`,
  run: async (args: string[], env: Env) => {
    const { values, positionals } = parse(args, { server: { type: 'string' }, ca: { type: 'string' }, timeout: { type: 'string' }, json: { type: 'boolean' } })
    noPositionals(positionals)
    const timeoutS = optionalSeconds(values.timeout, '--timeout') ?? VIEW_TIMEOUT_S
    const server = serverUrl(values.server, env)
    const status = await fetchStatus({ server, ca: caOf(values.ca, env) }, timeoutS * 1000)
    if (values.json) printJson(status)
    else console.log(describeStatus(server, status, colourOn(env)))
  },
}

function describeStatus(server: string, status: Status, colour: boolean): string {
  const uptime = status.uptime_s === undefined ? '' : ` (up ${duration(status.uptime_s)})`
  // "Connected" is the original's word for "enabled" (kept in /status for its clients); beside a count of 0 it would mislead.
  const count = status.websocket_connections
  const websocket = status.websocket === 'Disabled' ? 'disabled' : `enabled, ${count === 0 ? 'no' : count} connection${count === 1 ? '' : 's'}`
  const totals = status.tasks_total === undefined ? '' : `, ${status.tasks_total} done, ${status.tasks_failed ?? 0} failed`
  const summary = table([
    ['server', `${status.server}${uptime} at ${server}${status.version ? `, version ${status.version}` : ''}`],
    ['websocket', websocket],
    ['clients', String(status.clients)],
    ['tasks', `${status.tasks} in flight${totals}`],
  ])
  const regions = Object.entries(status.regions).sort(([a], [b]) => a.localeCompare(b))
  if (regions.length === 0) return `${summary}\n\nno clients connected`
  const rows = regions.map(([region, counts]) => [region, String(counts.clients), String(counts.active), health(counts, colour)])
  return `${summary}\n\n${table([['REGION', 'CLIENTS', 'ACTIVE', 'HEALTH'], ...rows])}`
}

/**
 * Active clients are those that may take a task now: not ejected, not draining. A failing one is
 * active only because the ejection cap keeps it: the region is not ok while one is.
 */
function health({ clients, active, failing }: Status['regions'][string], colour: boolean): string {
  if (active === 0) return red('down', colour)
  if (failing > 0) return red(`failing (${failing} of ${active} active)`, colour)
  return active < clients ? 'degraded' : 'ok'
}
