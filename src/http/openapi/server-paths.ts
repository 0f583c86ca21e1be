import { errors, json, withToken } from './parts.ts'

/** The server's own routes: status, the cluster, regions, health, metrics and this document. */
export function serverPaths(version: string): Record<string, unknown> {
  return {
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
}
