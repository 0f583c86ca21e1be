import { z } from 'zod'
import type { Config } from '../config/config.ts'
import { heartbeatReplySchema, heartbeatSchema } from '../wire/agent-hello.ts'
import { acceptedTaskSchema, taskViewSchema as storedTaskViewSchema } from '../wire/async-task.ts'
import { errorBodySchema, errorCodeSchema } from '../wire/errors.ts'
import { broadcastReplySchema, taskRequestSchema } from '../wire/task.ts'
import {
  clientActionReplySchema,
  clientDetailSchema,
  clientListSchema,
  clusterViewSchema,
  ejectRequestSchema,
  forgottenClientSchema,
  healthzSchema,
  readyzSchema,
  regionNodeSchema,
  statusSchema,
} from '../wire/views.ts'

/**
 * `GET /openapi.json`: the HTTP API as an OpenAPI 3.1 document, its schemas generated from the same
 * zod schemas the server validates with (z.toJSONSchema), so the description cannot drift from the
 * code. The paths that depend on the config (the pages, the WebSocket path) are the ones in force.
 */
export function openApiDocument(config: Config, version: string): Record<string, unknown> {
  const components = componentSchemas()
  const json = (schema: string, example?: unknown) => ({
    'application/json': { schema: ref(schema), ...(example === undefined ? {} : { example }) },
  })
  const errors = (...statuses: number[]) => Object.fromEntries(statuses.map((status) => [String(status), { $ref: `#/components/responses/Error${status}` }]))
  // Either scheme: a bearer token, or X-Token as the original Moonlight took it (a bare Authorization is accepted too, undeclarable in OpenAPI).
  const withToken = [{ bearer: [] }, { x_token: [] }]
  const taskIdParameter = { name: 'id', in: 'path', required: true, schema: { type: 'string' }, description: 'The task id from X-Task-ID or the 202.' }
  const idempotencyKey = {
    name: 'Idempotency-Key',
    in: 'header',
    required: false,
    schema: { type: 'string', minLength: 1, maxLength: 255, pattern: '^[\\x21-\\x7e]+$' },
    description: 'A retry with the same key and body from the same token returns the first answer (Idempotent-Replayed: true) and never runs the task twice.',
  }
  const agentAnswer = {
    description: "The agent's own answer as-is: its status, content type and body, plus X-Task-ID, X-Moonlight-Node and X-Moonlight-Attempts.",
    headers: {
      'X-Task-ID': { schema: { type: 'string' } },
      'X-Moonlight-Node': { schema: { type: 'string' } },
      'X-Moonlight-Attempts': { schema: { type: 'integer' } },
    },
    content: { '*/*': { schema: {}, example: { status: 'completed', result: '…' } } },
  }
  const nodeIdParameter = { name: 'node_id', in: 'path', required: true, schema: { type: 'string' }, description: "The client's node_id." }
  const exampleClient = {
    node_id: 'node-001',
    region: 'us-east-1',
    protocol: 'ws',
    ip: '10.0.0.7',
    port: 0,
    weight: 1,
    state: 'healthy',
    draining: false,
    registered_at: '2026-12-01T11:00:00.000Z',
    last_seen: '2026-12-01T12:00:00.000Z',
    in_flight: 0,
    successes: 12,
    failures: 1,
    consecutive_failures: 0,
    latency_ms: 28.4,
    ejected_until: null,
  }
  // 409 held_elsewhere: in a cluster, only the instance holding the client acts on it.
  const clientAction = (operationId: string, summary: string, example: unknown, requestBody?: unknown) => ({
    post: {
      operationId,
      summary,
      tags: ['operators'],
      security: withToken,
      parameters: [nodeIdParameter],
      ...(requestBody ? { requestBody } : {}),
      responses: {
        200: { description: 'The client as it is now.', content: json('ClientActionReply', { client: example }) },
        ...errors(400, 401, 403, 404, 409, 429),
      },
    },
  })
  const page = (summary: string) => ({
    get: {
      summary,
      tags: ['pages'],
      responses: { 200: { description: 'An HTML page.', content: { 'text/html': { schema: { type: 'string' }, example: '<!doctype html>…' } } } },
    },
  })

  const paths: Record<string, unknown> = {
    '/task/request': {
      post: {
        operationId: 'submitTask',
        summary: 'Run a task on one client of the region (or every client with mode broadcast; later with mode async)',
        tags: ['tasks'],
        security: config.require_task_token ? withToken : [],
        parameters: [idempotencyKey],
        requestBody: {
          required: true,
          content: json('TaskRequest', { region: 'us-east-1', payload: { action: 'process_data', data: { message: 'Hello' } } }),
        },
        responses: {
          200: agentAnswer,
          202: {
            description: 'mode async: accepted; the answer is fetched from GET /task/{id}/result.',
            headers: { Location: { schema: { type: 'string' } } },
            content: json('AcceptedTask', { task_id: 'k3x9q1-7', state: 'queued', status_url: '/task/k3x9q1-7' }),
          },
          ...errors(400, 401, 403, 409, 413, 415, 422, 429, 502, 503, 504),
        },
      },
    },
    '/task/{id}': {
      get: {
        operationId: 'getTask',
        summary: "A stored task's state, attempts and, once done, its answer",
        tags: ['tasks'],
        security: withToken,
        parameters: [taskIdParameter],
        responses: {
          200: {
            description: 'The task as it is now.',
            content: json('StoredTaskView', {
              task_id: 'k3x9q1-7',
              state: 'done',
              mode: 'async',
              region: 'us-east-1',
              node_id: 'node-001',
              attempts: [{ node_id: 'node-001', status: 200 }],
              submitted_at: '2026-12-01T12:00:00.000Z',
              finished_at: '2026-12-01T12:00:01.000Z',
              status: 200,
              headers: { 'content-type': 'application/json' },
              response: { ok: true },
            }),
          },
          ...errors(401, 404, 503),
        },
      },
      delete: {
        operationId: 'cancelTask',
        summary: 'Cancel a queued or running stored task',
        tags: ['tasks'],
        security: withToken,
        parameters: [taskIdParameter],
        responses: {
          200: {
            description: 'Cancelled.',
            content: json('StoredTaskView', {
              task_id: 'k3x9q1-7',
              state: 'cancelled',
              mode: 'async',
              region: 'us-east-1',
              node_id: null,
              attempts: [],
              submitted_at: '2026-12-01T12:00:00.000Z',
              finished_at: '2026-12-01T12:00:02.000Z',
            }),
          },
          ...errors(401, 404, 409, 503),
        },
      },
    },
    '/task/{id}/result': {
      get: {
        operationId: 'getTaskResult',
        summary: "A stored task's answer, exactly as a sync call would have had it",
        tags: ['tasks'],
        security: withToken,
        parameters: [
          taskIdParameter,
          {
            name: 'wait',
            in: 'query',
            required: false,
            schema: { type: 'number', minimum: 0, maximum: 60 },
            description: 'Hold the request up to this many seconds for the task to finish.',
          },
        ],
        responses: {
          200: agentAnswer,
          202: {
            description: 'Not finished yet (Retry-After says when to ask again).',
            headers: { 'Retry-After': { schema: { type: 'integer' } } },
            content: json('StoredTaskView'),
          },
          ...errors(400, 401, 404, 409, 502, 503, 504),
        },
      },
    },
    '/client/heartbeat': {
      post: {
        operationId: 'heartbeat',
        summary: 'Register or refresh an HTTP client (the token is in the body)',
        tags: ['agents'],
        requestBody: {
          required: true,
          content: json('Heartbeat', { ip: '192.168.1.100', node_id: 'node-001', token: 'supersecrettokenox0', region: 'us-east-1', port: 3000, weight: 1 }),
        },
        responses: {
          200: {
            description: 'Registered.',
            content: json('HeartbeatReply', {
              status: 'ok',
              server_time: '2026-12-01T12:00:00.000Z',
              node_id: 'node-001',
              region: 'us-east-1',
              weight: 1,
              client_ttl: 90,
            }),
          },
          ...errors(400, 401, 403, 409, 413, 415, 429, 503),
        },
      },
    },
    '/status': {
      get: {
        operationId: 'status',
        summary: 'Public summary',
        tags: ['operators'],
        responses: {
          200: {
            description: 'The summary.',
            content: json('Status', {
              server: 'Online',
              websocket: 'Connected',
              clients: 3,
              tasks: 0,
              regions: { 'us-east-1': { clients: 2, active: 2, failing: 0 } },
              version,
              uptime_s: 3600,
              started_at: '2026-12-01T11:00:00.000Z',
              tasks_total: 1234,
              tasks_failed: 2,
              websocket_connections: 1,
              cluster: 'alone',
              instance_id: 'edge-a:8080',
            }),
          },
        },
      },
    },
    '/clients': {
      get: {
        operationId: 'clients',
        summary: 'Every client with its health (monitor role)',
        tags: ['operators'],
        security: withToken,
        responses: { 200: { description: 'The clients.', content: json('ClientList', { clients: [] }) }, ...errors(401, 403, 429) },
      },
    },
    '/clients/{node_id}': {
      get: {
        operationId: 'clientDetail',
        summary: 'One client and its recent tasks (the ones this instance ran), each with every attempt (monitor role)',
        tags: ['operators'],
        security: withToken,
        parameters: [nodeIdParameter],
        responses: {
          200: {
            description: 'The client and up to 20 of its tasks, newest first.',
            content: json('ClientDetail', {
              client: exampleClient,
              tasks: [
                {
                  task_id: 'k3x9q1-7',
                  region: 'us-east-1',
                  mode: 'single',
                  node_id: 'node-001',
                  status: 200,
                  outcome: 'ok',
                  attempts: 2,
                  latency_ms: 41,
                  at: '2026-12-01T12:00:01.000Z',
                  tries: [
                    { node_id: 'node-002', kind: 'status', status: 503, ms: 12 },
                    { node_id: 'node-001', status: 200, ms: 28.4 },
                  ],
                },
              ],
            }),
          },
          ...errors(401, 403, 404, 429),
        },
      },
      delete: {
        operationId: 'forgetClient',
        summary: 'Forget a client: remove it now (a WebSocket agent is disconnected with 4003); an agent still running registers again (admin role)',
        tags: ['operators'],
        security: withToken,
        parameters: [nodeIdParameter],
        responses: { 200: { description: 'Forgotten.', content: json('ForgottenClient', { forgotten: 'node-001' }) }, ...errors(401, 403, 404, 409, 429) },
      },
    },
    '/clients/{node_id}/drain': clientAction(
      'drainClient',
      'Drain a client: no new tasks (as weight 0), its tasks in flight finish; kept across heartbeats and reconnects until undrained (admin role)',
      {
        ...exampleClient,
        draining: true,
        drained_by_operator: true,
      },
    ),
    '/clients/{node_id}/undrain': clientAction(
      'undrainClient',
      'Undrain a client drained by an operator: it takes tasks again at the weight it announces (admin role)',
      exampleClient,
    ),
    '/clients/{node_id}/eject': clientAction(
      'ejectClient',
      'Eject a client for `seconds` (health.ejection_time by default), as health would; then on probation, one trial task decides (admin role)',
      { ...exampleClient, state: 'ejected', ejected_until: '2026-12-01T12:00:30.000Z' },
      { required: false, content: json('EjectRequest', { seconds: 30 }) },
    ),
    '/cluster': {
      get: {
        operationId: 'cluster',
        summary: 'The instances of the cluster (monitor role)',
        tags: ['operators'],
        security: withToken,
        responses: {
          200: {
            description: 'The instances.',
            content: json('ClusterView', {
              mode: 'alone',
              instance_id: 'edge-a:8080',
              redis: null,
              redis_url: null,
              instances: [
                {
                  instance_id: 'edge-a:8080',
                  advertise_url: 'http://localhost:8080',
                  started_at: '2026-12-01T11:00:00.000Z',
                  refreshed_at: '2026-12-01T12:00:00.000Z',
                  clients: 3,
                  in_flight: 0,
                  self: true,
                },
              ],
            }),
          },
          ...errors(401, 403, 429),
        },
      },
    },
    '/regions': {
      get: {
        operationId: 'regions',
        summary: 'The hierarchy as a tree, with client counts',
        tags: ['operators'],
        responses: {
          200: {
            description: 'The tree from global.',
            content: json('RegionNode', { region: 'global', clients: 0, active: 0, failing: 0, total: 0, total_active: 0, children: [] }),
          },
        },
      },
    },
    '/healthz': {
      get: {
        operationId: 'healthz',
        summary: 'Liveness',
        tags: ['operators'],
        responses: { 200: { description: 'Up.', content: json('Healthz', { ok: true }) }, ...errors(503) },
      },
    },
    '/readyz': {
      get: {
        operationId: 'readyz',
        summary: 'Readiness: 200 once the server may take traffic (in a cluster: joined, Redis reachable); 503 not_ready with the reason',
        tags: ['operators'],
        responses: { 200: { description: 'Ready.', content: json('Ready', { ready: true }) }, ...errors(503) },
      },
    },
    '/metrics': {
      get: {
        operationId: 'metrics',
        summary: 'Prometheus text format (public, no addresses)',
        tags: ['operators'],
        responses: {
          200: { description: 'The metrics.', content: { 'text/plain': { schema: { type: 'string' }, example: 'moonlight_tasks_in_flight 0\n' } } },
        },
      },
    },
    '/openapi.json': {
      get: {
        operationId: 'openapi',
        summary: 'This document',
        tags: ['operators'],
        responses: {
          200: {
            description: 'OpenAPI 3.1.',
            content: { 'application/json': { schema: { type: 'object' }, example: { openapi: '3.1.0', info: { title: 'Moonlight Server', version } } } },
          },
        },
      },
    },
  }
  if (config.ws.enabled) {
    paths[config.ws.path] = {
      get: {
        operationId: 'websocket',
        summary: 'The WebSocket endpoint for agents and dashboards (an Upgrade request; the protocol is in the README)',
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
        responses: { 200: { description: 'A file.' }, ...errors(404) },
      },
    }
  }

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

/** One response per error status, each the JSON error body; the codes each status carries are listed. */
function errorResponses(): Record<string, unknown> {
  const byStatus: Record<number, string> = {
    400: 'invalid_json, invalid_body (with issues), too_deep, bad_request',
    401: 'unauthorized',
    403: 'forbidden, address_not_allowed, forbidden_origin',
    404: 'not_found, unknown_task, unknown_node',
    409: 'node_id_in_use, cancelled, task_ended, held_elsewhere',
    413: 'body_too_large',
    415: 'unsupported_media_type',
    422: 'idempotency_mismatch',
    426: 'upgrade_required',
    429: 'too_many_failures (with Retry-After)',
    502: 'all_attempts_failed (with attempts; reason retry_budget_exhausted when the retry budget refused a retry), answer_too_large',
    503: 'not_ready, no_client, queue_timeout and queue_full (every agent of the pool full; with Retry-After), shutting_down, too_many_clients, too_many_connections, too_many_unregistered, too_many_tasks, store_unavailable',
    504: 'timeout (with attempts)',
  }
  return Object.fromEntries(
    Object.entries(byStatus).map(([status, codes]) => [
      `Error${status}`,
      {
        description: `An error: ${codes}.`,
        content: { 'application/json': { schema: ref('Error'), example: { error: 'what went wrong', code: codes.split(/[ ,]/)[0] } } },
      },
    ]),
  )
}

/** The zod schema behind each component: requests as the server reads them, answers as it writes them. */
export const REQUEST_SCHEMAS = { TaskRequest: taskRequestSchema, Heartbeat: heartbeatSchema, EjectRequest: ejectRequestSchema } as const
export const ANSWER_SCHEMAS = {
  Error: errorBodySchema.extend({ code: errorCodeSchema }),
  AcceptedTask: acceptedTaskSchema,
  StoredTaskView: storedTaskViewSchema,
  BroadcastReply: broadcastReplySchema,
  HeartbeatReply: heartbeatReplySchema,
  Status: statusSchema,
  ClientList: clientListSchema,
  ClientDetail: clientDetailSchema,
  ClientActionReply: clientActionReplySchema,
  ForgottenClient: forgottenClientSchema,
  ClusterView: clusterViewSchema,
  RegionNode: regionNodeSchema,
  Healthz: healthzSchema,
  Ready: readyzSchema,
} as const

/** Every schema of the document, generated from the wire's zod schemas; references between them point into components. */
function componentSchemas(): Record<string, unknown> {
  const generate = (schemas: Record<string, z.ZodType>, io: 'input' | 'output') => {
    const registry = z.registry<{ id: string }>()
    for (const [id, schema] of Object.entries(schemas)) registry.add(schema, { id })
    return z.toJSONSchema(registry, { uri: (id) => `#/components/schemas/${id}`, unrepresentable: 'any', io }).schemas
  }
  const schemas = { ...generate(REQUEST_SCHEMAS, 'input'), ...generate(ANSWER_SCHEMAS, 'output') }
  // Each generated schema names itself ($id) and its dialect ($schema): inside components they are noise, and $id would re-base its refs.
  return Object.fromEntries(Object.entries(schemas).map(([id, { $id: _id, $schema: _schema, ...schema }]) => [id, schema]))
}

function ref(id: string): { $ref: string } {
  return { $ref: `#/components/schemas/${id}` }
}
