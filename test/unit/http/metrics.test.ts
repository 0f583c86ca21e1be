import { describe, expect, test } from 'bun:test'
import { parseConfig } from '../../../src/config/config.ts'
import { healthPolicy, makeSettings } from '../../../src/config/settings.ts'
import { LocalMembership } from '../../../src/fleet/membership.ts'
import { Registry } from '../../../src/fleet/registry.ts'
import { renderMetrics } from '../../../src/http/metrics.ts'
import { Observations } from '../../../src/observe/observations.ts'
import { TaskStats } from '../../../src/observe/task-stats.ts'
import { AuthFailures } from '../../../src/security/auth-failures.ts'
import { SEED_CONFIG } from '../../support/helpers.ts'

describe('/metrics', () => {
  test('renders a histogram of more series than a call takes arguments (a hierarchy of 60 000 regions)', () => {
    const settings = makeSettings(parseConfig(SEED_CONFIG, 'test').config, { externalTokens: [], failures: new AuthFailures(() => 0) })
    const registry = new Registry(settings.regions, healthPolicy(settings.config))
    const observations = new Observations()
    // The failure this guards (the lines spread into one push: "Maximum call stack size exceeded") comes
    // from the stack's size, not a fixed count of arguments: in Bun 1.4.5 with an 8 MB stack a spread of
    // 600 000 lines passes and one of 700 000 fails. 60 000 regions are 60 000 × (15 buckets + +Inf,
    // _sum, _count) = 1 080 000 lines: checked to fail with that spread here. A larger stack may need more.
    const regions = 60_000
    for (let i = 0; i < regions; i++) {
      observations.onTask({
        task_id: 't',
        region: `r${i}`,
        mode: 'single',
        node_id: 'n',
        status: 200,
        outcome: 'ok',
        attempts: 1,
        latency_ms: 1,
        finishedAtMs: 0,
      })
    }
    const text = renderMetrics({
      membership: new LocalMembership(registry, () => 'test'),
      stats: new TaskStats(),
      inFlight: () => 0,
      httpAgentPools: () => [],
      wsConnections: () => 0,
      authFailures: () => ({ failures: 0, throttled: 0 }),
      startedAtMs: 0,
      nowMs: 0,
      observations,
      process: () => ({ residentBytes: 1, eventLoopDelayWorstS: 0, eventLoopDelayMeanS: 0 }),
    })
    expect(text.match(/^moonlight_task_duration_seconds_count\{/gm)?.length).toBe(regions)
  })
})
