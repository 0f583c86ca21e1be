import { loadConfig } from '../../config/config.ts'
import { openApiDocument } from '../../http/openapi.ts'
import { VERSION } from '../../version.ts'
import { type Command, type Env, parse, UsageError } from './_command.ts'

export const openapiCommand: Command = {
  summary: 'print the OpenAPI document of the HTTP API',
  usage: `moonlight openapi [--config PATH]

Prints the OpenAPI 3.1 document that GET /openapi.json serves, for the config "moonlight serve"
would use (or PATH): the page and WebSocket paths depend on it.`,
  run: async (args: string[], env: Env) => {
    const { values, positionals } = parse(args, { config: { type: 'string' } })
    if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`)
    const loaded = loadConfig({ explicitPath: values.config, env })
    console.log(JSON.stringify(openApiDocument(loaded.config, VERSION), null, 2))
  },
}
