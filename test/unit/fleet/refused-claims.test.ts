import { describe, expect, test } from 'bun:test'
import { NodeConflicts } from '../../../src/fleet/refused-claims.ts'

function conflicts() {
  const logs: string[] = []
  const changed: string[] = []
  let nowMs = Date.parse('2026-01-01T00:00:00Z')
  const tracker = new NodeConflicts({ log: (line) => void logs.push(line), now: () => nowMs, forgetMs: () => 180_000 })
  tracker.onChanged = (id) => void changed.push(id)
  return {
    tracker,
    logs,
    changed,
    advance: (ms: number) => {
      nowMs += ms
    },
  }
}

describe('node id conflicts', () => {
  test('two agents refused every 15 s for two minutes: logged once a minute, with both addresses and the count', () => {
    const { tracker, logs, advance } = conflicts()
    for (let beat = 0; beat < 9; beat++) {
      tracker.report('web', '10.0.0.1:3000', '10.0.0.2:3000')
      advance(15_000)
    }
    expect(logs).toHaveLength(3)
    expect(logs[0]).toContain(
      '"web" is held by a live agent at 10.0.0.1:3000; another agent at 10.0.0.2:3000 was refused (1 time since 2026-01-01T00:00:00.000Z',
    )
    expect(logs[1]).toContain('(5 times since 2026-01-01T00:00:00.000Z')
    expect(tracker.view('web')).toEqual({ other_address: '10.0.0.2:3000', since: '2026-01-01T00:00:00.000Z', last_at: '2026-01-01T00:02:00.000Z', count: 9 })
  })

  test('each node id has its own minute; a conflict is forgotten once claims stop for forgetMs, and starts anew after', () => {
    const { tracker, logs, changed, advance } = conflicts()
    tracker.report('a', 'h:1', 'x:1')
    tracker.report('b', 'h:2', 'x:2')
    expect(logs).toHaveLength(2)
    expect(changed).toEqual(['a', 'b'])
    advance(179_999)
    expect(tracker.view('a')?.count).toBe(1)
    advance(1)
    expect(tracker.view('a')).toBeUndefined()
    tracker.report('a', 'h:1', 'y:1')
    expect(tracker.view('a')).toMatchObject({ other_address: 'y:1', count: 1 })
    expect(logs).toHaveLength(3)
  })
})
