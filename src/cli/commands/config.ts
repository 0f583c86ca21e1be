import { redactRedisUrl } from '../../cluster/redis-connection.ts'
import { type Config, ConfigError, type LoadedConfig, loadConfig, unknownKeyWarning } from '../../config/config.ts'
import { type Command, type Env, parse, UsageError } from './_command.ts'
import { printJson } from './_output.ts'

export const configCommand: Command = {
  summary: 'check a config file',
  usage: `moonlight config check [PATH] [--json]

Validates a config file and prints what is wrong (exit 1), or the effective config with every
default filled in (exit 0); with --json, {"source", "unknown_keys", "config"} as JSON. Without PATH it checks the file "moonlight serve" would use:
$MLS_CONFIG, ./mls.json, ~/.config/moonlight/mls.json, /etc/moonlight/mls.json, else the embedded default.`,
  run: async (args: string[], env: Env) => {
    const { values, positionals } = parse(args, { json: { type: 'boolean' } })
    const [action, path, extra] = positionals
    if (action !== 'check')
      throw new UsageError(action === undefined ? 'missing action: moonlight config check [PATH]' : `unknown action "${action}" (only "check")`)
    if (extra !== undefined) throw new UsageError(`unexpected argument "${extra}"`)
    return check(path, env, values.json === true)
  },
}

function check(path: string | undefined, env: Env, json: boolean): number {
  let loaded: LoadedConfig
  try {
    loaded = loadConfig({ explicitPath: path, env })
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error
    const [headline = '', ...problems] = error.message.split('\n')
    // Unreadable or not JSON: one line says it all, under this command's name as every other failure of it.
    if (problems.length === 0) {
      console.error(`moonlight config check: ${headline}`)
      return 1
    }
    // The problems are this command's output; stderr gets the one-line verdict.
    console.log(error.message)
    console.error(`moonlight config check: ${headline.replace(/:$/, '')} (${problems.length} problem${problems.length === 1 ? '' : 's'})`)
    return 1
  }
  if (json) {
    printJson({ source: loaded.source, unknown_keys: loaded.unknownKeys, config: redactTokens(loaded.config) })
    return 0
  }
  console.log(`${loaded.source}: OK`)
  for (const key of loaded.unknownKeys) console.log(`warning: ${unknownKeyWarning(key)}`)
  console.log('effective config:')
  console.log(JSON.stringify(redactTokens(loaded.config), null, 2))
  return 0
}

/**
 * Secrets shown enough to recognise each one, not enough to use it: the tokens (those of `access`
 * too), the signing secret (whoever has it can send any signed call to every agent), the Redis URL's
 * password, and the tracing headers' values (an exporter's API key), their names kept.
 */
function redactTokens(config: Config): Config {
  const redact = (token: string) => `${token.slice(0, 4)}… (${token.length} characters)`
  return {
    ...config,
    tokens: config.tokens.map(redact),
    access: config.access.map((entry) => (entry.token === undefined ? entry : { ...entry, token: redact(entry.token) })),
    ...(config.signing_secret === undefined ? {} : { signing_secret: redact(config.signing_secret) }),
    ...(config.cluster ? { cluster: { ...config.cluster, redis_url: redactRedisUrl(config.cluster.redis_url) } } : {}),
    ...(config.tracing
      ? { tracing: { ...config.tracing, headers: Object.fromEntries(Object.entries(config.tracing.headers).map(([name, value]) => [name, redact(value)])) } }
      : {}),
  }
}
