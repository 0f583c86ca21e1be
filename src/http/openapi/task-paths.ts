import type { Config } from '../../config/config.ts'
import { agentAnswer, agentAnswerAnyStatus, errors, idempotencyKey, json, ref, taskIdParameter, traceContext, withToken } from './parts.ts'

/** The task routes: run one (sync, async or broadcast), and a stored task's view, result and cancel. */
export function taskPaths(config: Pick<Config, 'require_task_token'>): Record<string, unknown> {
  // require_task_token: false opens the stored tasks' routes too (anyone who has the id).
  const security = config.require_task_token ? withToken : []
  return {
    '/task/request': {
      post: {
        operationId: 'submitTask',
        summary: 'Run a task on one client of the region (or every client with mode broadcast; later with mode async)',
        tags: ['tasks'],
        security,
        parameters: [idempotencyKey, ...traceContext],
        requestBody: {
          required: true,
          content: json('TaskRequest', { region: 'us-east-1', payload: { action: 'process_data', data: { message: 'Hello' } } }),
        },
        responses: {
          200: {
            ...agentAnswer,
            description:
              "The agent's own answer as-is: its status, content type and body, plus X-Task-ID, X-Moonlight-Node and X-Moonlight-Attempts. With mode broadcast: the BroadcastReply (application/json, X-Task-ID only), every client's part, when any answered.",
            headers: {
              ...agentAnswer.headers,
              'X-Moonlight-Node': {
                ...agentAnswer.headers['X-Moonlight-Node'],
                required: false,
                description: "The client that answered; not on a broadcast's reply.",
              },
              'X-Moonlight-Attempts': { ...agentAnswer.headers['X-Moonlight-Attempts'], required: false, description: "Not on a broadcast's reply." },
            },
          },
          202: {
            description: 'mode async: accepted; the answer is fetched from GET /task/{id}/result.',
            headers: { Location: { required: true, schema: { type: 'string' } }, 'X-Task-ID': { required: true, schema: { type: 'string' } } },
            content: json('AcceptedTask', { task_id: 'k3x9q1-7', state: 'queued', status_url: '/task/k3x9q1-7' }),
          },
          ...errors(400, 401, 403, 404, 409, 413, 415, 422, 429),
          502: {
            description:
              "An error: all_attempts_failed (with attempts), answer_too_large. With mode broadcast, when no client answered: the BroadcastReply with every client's part (no error and code).",
            content: {
              'application/json': {
                schema: { anyOf: [ref('Error'), ref('BroadcastReply')] },
                example: { error: 'every attempt failed (1)', code: 'all_attempts_failed' },
              },
            },
          },
          ...errors(503, 504),
          default: agentAnswerAnyStatus,
        },
      },
    },
    '/task/{id}': {
      get: {
        operationId: 'getTask',
        summary: "A stored task's state, attempts and, once done, its answer",
        tags: ['tasks'],
        security,
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
          ...errors(401, 403, 404, 429, 503),
        },
      },
      delete: {
        operationId: 'cancelTask',
        summary: 'Cancel a queued or running stored task',
        tags: ['tasks'],
        security,
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
          ...errors(401, 403, 404, 409, 429, 503),
        },
      },
    },
    '/task/{id}/result': {
      get: {
        operationId: 'getTaskResult',
        summary: "A stored task's answer, exactly as a sync call would have had it",
        tags: ['tasks'],
        security,
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
            headers: { 'Retry-After': { required: true, schema: { type: 'integer' } }, 'X-Task-ID': { required: true, schema: { type: 'string' } } },
            content: json('StoredTaskView'),
          },
          // The stored answer: the server's error a sync call would have had (502, 503, 504, 404 unknown_node), or the agent's own.
          ...errors(400, 401, 403, 404, 409, 429, 502, 503, 504),
          default: agentAnswerAnyStatus,
        },
      },
    },
  }
}
