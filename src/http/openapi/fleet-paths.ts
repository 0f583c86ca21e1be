import { clientAction, errors, exampleClient, json, nodeIdParameter, withToken } from './parts.ts'

/** The fleet's routes: an HTTP agent's heartbeat, the clients, and an operator's actions on one. */
export function fleetPaths(): Record<string, unknown> {
  return {
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
  }
}
