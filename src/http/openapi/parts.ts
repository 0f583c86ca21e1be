import { z } from 'zod'
import { heartbeatReplySchema, heartbeatSchema } from '../../wire/agent-hello.ts'
import { acceptedTaskSchema, taskViewSchema as storedTaskViewSchema } from '../../wire/async-task.ts'
import { errorBodySchema, errorCodeSchema } from '../../wire/errors.ts'
import { broadcastReplySchema, taskRequestSchema } from '../../wire/task.ts'
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
} from '../../wire/views.ts'

/** The pieces every path of the OpenAPI document is built from: content, errors, security, parameters, examples. */

export const json = (schema: string, example?: unknown) => ({
  'application/json': { schema: ref(schema), ...(example === undefined ? {} : { example }) },
})
export const errors = (...statuses: number[]) =>
  Object.fromEntries(statuses.map((status) => [String(status), { $ref: `#/components/responses/Error${status}` }]))
// Either scheme: a bearer token, or X-Token as the original Moonlight took it (a bare Authorization is accepted too, undeclarable in OpenAPI).
export const withToken = [{ bearer: [] }, { x_token: [] }]
export const taskIdParameter = { name: 'id', in: 'path', required: true, schema: { type: 'string' }, description: 'The task id from X-Task-ID or the 202.' }
export const idempotencyKey = {
  name: 'Idempotency-Key',
  in: 'header',
  required: false,
  schema: { type: 'string', minLength: 1, maxLength: 255, pattern: '^[\\x21-\\x7e]+$' },
  description: 'A retry with the same key and body from the same token returns the first answer (Idempotent-Replayed: true) and never runs the task twice.',
}
/** W3C trace context: continued to the agent (docs/operations.md, Tracing). */
export const traceContext = [
  {
    name: 'traceparent',
    in: 'header',
    required: false,
    schema: { type: 'string', pattern: '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}' },
    description:
      "The caller's W3C trace context: the agent gets the caller's trace id (HTTP: a traceparent header; WebSocket: in the task frame), with Moonlight's attempt span as parent when tracing is on. An invalid one is ignored.",
  },
  { name: 'tracestate', in: 'header', required: false, schema: { type: 'string' }, description: 'Passed on with a valid traceparent.' },
]
const agentHeaders = {
  'X-Task-ID': { required: true, schema: { type: 'string' } },
  'X-Moonlight-Node': { required: true, schema: { type: 'string' }, description: 'The client that answered.' },
  'X-Moonlight-Attempts': { required: true, schema: { type: 'integer' } },
}
export const agentAnswer = {
  description: "The agent's own answer as-is: its status, content type and body, plus X-Task-ID, X-Moonlight-Node and X-Moonlight-Attempts.",
  headers: agentHeaders,
  content: { '*/*': { schema: {}, example: { status: 'completed', result: '…' } } },
}
/**
 * An agent answers with the status it chooses (201, 404, 418…) and the caller gets it as-is: the
 * operation's default. Such an answer carries X-Moonlight-Node, which tells it from the server's own
 * error of the same status. A 5xx is never passed as-is: it fails the attempt, and reaches the caller as 502 all_attempts_failed.
 */
export const agentAnswerAnyStatus = {
  ...agentAnswer,
  description:
    "The agent's own answer with whatever status it chose (an agent's 404 or 418 too), as-is: it carries X-Moonlight-Node, the server's own errors never do. An agent's 5xx is never passed as-is: it fails the attempt (retried where the task allows) and reaches the caller as 502 all_attempts_failed.",
}
export const nodeIdParameter = { name: 'node_id', in: 'path', required: true, schema: { type: 'string' }, description: "The client's node_id." }
export const exampleClient = {
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
export const clientAction = (operationId: string, summary: string, example: unknown, requestBody?: unknown) => ({
  post: {
    operationId,
    summary,
    tags: ['operators'],
    security: withToken,
    parameters: [nodeIdParameter],
    ...(requestBody ? { requestBody } : {}),
    responses: {
      200: { description: 'The client as it is now.', content: json('ClientActionReply', { client: example }) },
      // Only eject reads a body: drain and undrain never refuse one.
      ...(requestBody ? errors(400, 401, 403, 404, 409, 413, 415, 429) : errors(401, 403, 404, 409, 429)),
    },
  },
})
export const page = (summary: string) => ({
  get: {
    summary,
    tags: ['pages'],
    responses: { 200: { description: 'An HTML page.', content: { 'text/html': { schema: { type: 'string' }, example: '<!doctype html>…' } } } },
  },
})

/** One response per error status, each the JSON error body; the codes each status carries are listed. */
export function errorResponses(): Record<string, unknown> {
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
    429: 'too_many_failures (with retry_after and Retry-After)',
    502: 'all_attempts_failed (with attempts; reason retry_budget_exhausted when the retry budget refused a retry), answer_too_large',
    503: 'not_ready, no_client, node_unavailable, queue_timeout and queue_full (every agent of the pool full; with Retry-After), shutting_down (any route while the server stops), too_many_clients, too_many_connections, too_many_unregistered, too_many_tasks and store_unavailable (with Retry-After)',
    504: 'timeout (with attempts)',
  }
  const retryAfter: Record<string, unknown> = {
    429: { 'Retry-After': { required: true, schema: { type: 'integer' }, description: 'Seconds until this address may try again.' } },
    503: {
      'Retry-After': { required: false, schema: { type: 'integer' }, description: 'With queue_timeout, queue_full, too_many_tasks and store_unavailable.' },
    },
  }
  return Object.fromEntries(
    Object.entries(byStatus).map(([status, codes]) => [
      `Error${status}`,
      {
        description: `An error: ${codes}.`,
        ...(retryAfter[status] ? { headers: retryAfter[status] } : {}),
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
export function componentSchemas(): Record<string, unknown> {
  const generate = (schemas: Record<string, z.ZodType>, io: 'input' | 'output') => {
    const registry = z.registry<{ id: string }>()
    for (const [id, schema] of Object.entries(schemas)) registry.add(schema, { id })
    return z.toJSONSchema(registry, { uri: (id) => `#/components/schemas/${id}`, unrepresentable: 'any', io }).schemas
  }
  const schemas = { ...generate(REQUEST_SCHEMAS, 'input'), ...generate(ANSWER_SCHEMAS, 'output') }
  // Each generated schema names itself ($id) and its dialect ($schema): inside components they are noise, and $id would re-base its refs.
  return Object.fromEntries(Object.entries(schemas).map(([id, { $id: _id, $schema: _schema, ...schema }]) => [id, schema]))
}

export function ref(id: string): { $ref: string } {
  return { $ref: `#/components/schemas/${id}` }
}
