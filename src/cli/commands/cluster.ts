import type { ClusterView } from '../../wire/views.ts'
import { fetchCluster, VIEW_TIMEOUT_S } from '../api-client.ts'
import { type Command, type Env, readViewArgs, UsageError } from './_command.ts'
import { duration, printJson, table } from './_output.ts'

export const clusterCommand: Command = {
  summary: 'list the instances of the cluster',
  usage: `moonlight cluster [--server URL] [--token T] [--ca FILE] [--timeout S] [--json]

Shows GET /cluster: every instance with its id, advertised URL, start time, the clients it holds,
its tasks in flight and when it last refreshed its presence; or that the server runs alone.

  --server URL   the server's base URL (default $MLS_SERVER, else http://localhost:8080)
  --token T      a token with the monitor role (default $MLS_TOKEN); required
  --ca FILE      a PEM CA bundle to verify an https:// server against (default $MLS_CA)
  --timeout S    give up after S seconds (default ${VIEW_TIMEOUT_S})
  --json         print the cluster as JSON instead`,
  run: async (args: string[], env: Env) => {
    const { target, timeoutMs, json } = readViewArgs(args, env)
    if (!target.token) throw new UsageError('GET /cluster needs a token: pass --token or set MLS_TOKEN')
    const view = await fetchCluster(target, timeoutMs)
    if (json) printJson(view)
    else console.log(describeCluster(view, Date.now()))
  },
}

function describeCluster(view: ClusterView, nowMs: number): string {
  const head =
    view.mode === 'alone'
      ? `instance ${view.instance_id}: running alone (no cluster configured)`
      : `instance ${view.instance_id} in a cluster through ${view.redis_url}, Redis ${view.redis}`
  const rows = view.instances.map((instance) => [
    `${instance.instance_id}${instance.self ? ' (this one)' : ''}`,
    instance.advertise_url,
    `${duration((nowMs - Date.parse(instance.started_at)) / 1000)} ago`,
    String(instance.clients),
    String(instance.in_flight),
    `${duration(Math.max(0, nowMs - Date.parse(instance.refreshed_at)) / 1000)} ago`,
  ])
  return `${head}\n\n${table([['INSTANCE', 'ADVERTISED', 'STARTED', 'CLIENTS', 'IN-FLIGHT', 'REFRESHED'], ...rows])}`
}
