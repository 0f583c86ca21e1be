import { fetchReadiness } from '../api-client.ts'
import { type Command, caOf, type Env, noPositionals, optionalSeconds, parse, serverUrl } from './_command.ts'

/** Below a container engine's own health-check timeout (Docker's default: 30 s), so this command reports, not the engine. */
const HEALTHCHECK_TIMEOUT_S = 5

export const healthcheckCommand: Command = {
  summary: 'exit 0 if the server is ready for traffic (GET /readyz), else 1',
  usage: `moonlight healthcheck [--server URL] [--ca FILE] [--timeout S]

Asks GET /readyz: exits 0 when the server is ready for traffic, 1 with the reason when it is not (joining
a cluster, Redis unreachable, stopping) or cannot be reached. It needs nothing but this binary, so the
container image (which has no shell or curl) runs it as its HEALTHCHECK.

  --server URL   the server's base URL (default $MLS_SERVER, else http://localhost:8080)
  --ca FILE      a PEM CA bundle to verify an https:// server against (default $MLS_CA)
  --timeout S    give up after S seconds (default ${HEALTHCHECK_TIMEOUT_S})`,
  run: async (args: string[], env: Env) => {
    const { values, positionals } = parse(args, { server: { type: 'string' }, ca: { type: 'string' }, timeout: { type: 'string' } })
    noPositionals(positionals)
    const timeoutS = optionalSeconds(values.timeout, '--timeout') ?? HEALTHCHECK_TIMEOUT_S
    const server = serverUrl(values.server, env)
    await fetchReadiness({ server, ca: caOf(values.ca, env) }, timeoutS * 1000)
    console.log(`ready: ${server}`)
  },
}
