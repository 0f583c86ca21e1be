import { describe, expect, test } from 'bun:test'
import { type Config, parseConfig } from '../../../src/config/config.ts'
import { planReload } from '../../../src/config/reload.ts'
import { SEED_CONFIG } from '../../support/helpers.ts'

const started: Config = parseConfig(SEED_CONFIG, 'started').config

function next(overrides: Record<string, unknown>): Config {
  return parseConfig({ ...SEED_CONFIG, ...overrides }, 'reloaded').config
}

describe('config reload', () => {
  test('the same config again changes nothing and waits for nothing', () => {
    expect(planReload(started, next({}))).toEqual({ config: started, atNextStart: [] })
  })

  test('port, host, html, ws.enabled and ws.path keep their running values and are listed for the next start', () => {
    const wanted = next({
      port: 9090,
      host: '127.0.0.1',
      html: { enabled: false, static_path: '/assets', index_path: '/', dashboard_path: '/dash' },
      ws: { ...SEED_CONFIG.ws, enabled: false, path: '/socket' },
    })
    const plan = planReload(started, wanted)
    expect(plan.atNextStart).toEqual(['port', 'host', 'html', 'ws.enabled', 'ws.path'])
    expect(plan.config.port).toBe(8080)
    expect(plan.config.host).toBe('0.0.0.0')
    expect(plan.config.html).toEqual(started.html)
    expect(plan.config.ws).toMatchObject({ enabled: true, path: '/ws' })
  })

  test('one changed html field keeps the whole html block as it started', () => {
    const plan = planReload(started, next({ html: { ...SEED_CONFIG.html, dashboard_path: '/dash' } }))
    expect(plan.atNextStart).toEqual(['html'])
    expect(plan.config.html.dashboard_path).toBe('/dashboard')
  })

  test('max_answer_bytes applies now (HTTP answers) and is listed for WebSocket messages', () => {
    const plan = planReload(started, next({ max_answer_bytes: 1024 }))
    expect(plan.config.max_answer_bytes).toBe(1024)
    expect(plan.atNextStart).toEqual(['max_answer_bytes (for WebSocket messages)'])
  })

  test('everything else applies at once, the rest of ws included', () => {
    const changes = {
      tokens: ['another-token-123'],
      retry_count: 1,
      task_timeout: 5,
      max_body_bytes: 2048,
      require_task_token: false,
      client_ttl: 20,
      max_clients: 7,
      health: { failures_to_eject: 5, ejection_time: 2, max_ejection_time: 20, max_ejected_percent: 25 },
      region_hierarchy: { 'us-east-1': 'atlantic' },
      ws: {
        ...SEED_CONFIG.ws,
        heartbeat_interval: 5,
        read_timeout: 15,
        write_timeout: 3,
        connection_check_interval: 7,
        max_connections: 50,
        register_timeout: 2,
        max_unregistered: 9,
      },
    }
    const wanted = next(changes)
    const plan = planReload(started, wanted)
    expect(plan.atNextStart).toEqual([])
    expect(plan.config).toEqual(wanted)
    expect(plan.config).toMatchObject({ ...changes, ws: { ...changes.ws, enabled: true, path: '/ws' } })
  })

  test('a reload that changes both kinds applies one and keeps the other', () => {
    const plan = planReload(started, next({ port: 1, retry_count: 0, ws: { ...SEED_CONFIG.ws, path: '/other', heartbeat_interval: 9 } }))
    expect(plan.atNextStart).toEqual(['port', 'ws.path'])
    expect(plan.config).toMatchObject({ port: 8080, retry_count: 0, ws: { path: '/ws', heartbeat_interval: 9 } })
  })
})
