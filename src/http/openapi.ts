import type { Config } from '../config/config.ts'
import { fleetPaths } from './openapi/fleet-paths.ts'
import { componentSchemas, errorResponses, errors, page } from './openapi/parts.ts'
import { serverPaths } from './openapi/server-paths.ts'
import { taskPaths } from './openapi/task-paths.ts'

export { ANSWER_SCHEMAS, REQUEST_SCHEMAS } from './openapi/parts.ts'

/**
 * `GET /openapi.json`: the HTTP API as an OpenAPI 3.1 document, its schemas generated from the same
 * zod schemas the server validates with (z.toJSONSchema), so the description cannot drift from the
 * code. The paths come by room (openapi/*-paths.ts); those that depend on the config (the pages, the
 * WebSocket path) are the ones in force.
 */
export function openApiDocument(config: Config, version: string): Record<string, unknown> {
  const components = componentSchemas()
  const paths: Record<string, unknown> = { ...taskPaths(config), ...fleetPaths(), ...serverPaths(version) }
  if (config.ws.enabled) {
    paths[config.ws.path] = {
      get: {
        operationId: 'websocket',
        summary: 'The WebSocket endpoint for agents and dashboards (an Upgrade request; the protocol is in docs/websocket-protocol.md)',
        tags: ['agents'],
        responses: { 101: { description: 'Switching protocols.' }, ...errors(403, 426, 503) },
      },
    }
  }
  if (config.html.enabled) {
    paths[config.html.index_path] = page('The docs page')
    paths[config.html.dashboard_path] = page('The live dashboard')
    paths[`${config.html.static_path.replace(/\/+$/, '')}/{file}`] = {
      get: {
        summary: "The pages' assets",
        tags: ['pages'],
        parameters: [{ name: 'file', in: 'path', required: true, schema: { type: 'string' } }],
        responses: {
          200: {
            description: 'A file.',
            content: {
              'text/css': { schema: { type: 'string' }, example: ':root { color-scheme: light dark; }' },
              'text/javascript': { schema: { type: 'string' } },
              'image/svg+xml': { schema: { type: 'string' } },
            },
          },
          ...errors(404),
        },
      },
    }
  }

  whileStopping(paths)

  return {
    openapi: '3.1.0',
    info: {
      title: 'Moonlight Server',
      version,
      description: 'A regional task proxy: POST a task for a region, get the answer of a healthy agent there.',
    },
    tags: [{ name: 'tasks' }, { name: 'agents' }, { name: 'operators' }, { name: 'pages' }],
    paths,
    components: {
      schemas: components,
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer', description: 'Authorization: Bearer <token>, a token of the config with the role the route needs.' },
        x_token: {
          type: 'apiKey',
          in: 'header',
          name: 'X-Token',
          description: 'The same token in X-Token, as the original Moonlight took it; a bare "Authorization: <token>" works too. Same roles and checks.',
        },
      },
      responses: errorResponses(),
    },
  }
}

/**
 * While the server stops, every route answers 503 shutting_down (src/server/listening.ts) but
 * GET /status, which says "Stopping": each operation lists that 503.
 */
function whileStopping(paths: Record<string, unknown>): void {
  for (const [path, operations] of Object.entries(paths)) {
    for (const [method, operation] of Object.entries(operations as Record<string, { responses: Record<string, unknown> }>)) {
      if (path === '/status' && method === 'get') continue
      operation.responses['503'] ??= errors(503)['503']
    }
  }
}
