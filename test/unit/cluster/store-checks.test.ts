import { describe, expect, test } from 'bun:test'
import { configValue, riskySettings } from '../../../src/cluster/store-checks.ts'

const URL = 'redis://127.0.0.1:6379'
const safe = { appendonly: 'yes', save: '', maxmemoryPolicy: 'noeviction' }

describe("Redis's settings that lose async tasks", () => {
  test('appendonly yes and noeviction: nothing to say, with or without snapshots', () => {
    expect(riskySettings(safe, URL)).toEqual([])
    expect(riskySettings({ ...safe, save: '3600 1' }, URL)).toEqual([])
  })

  test('appendonly no with save "": every task lost at a restart', () => {
    const [line, ...rest] = riskySettings({ ...safe, appendonly: 'no' }, URL)
    expect(rest).toEqual([])
    expect(line).toContain('keeps nothing on disk (appendonly no, save "")')
    expect(line).toContain('a Redis restart loses every queued and stored async task')
  })

  test('appendonly no with snapshots: the tasks since the last snapshot', () => {
    const [line] = riskySettings({ ...safe, appendonly: 'no', save: '3600 1 300 100' }, URL)
    expect(line).toContain('persists only by snapshots (appendonly no, save "3600 1 300 100")')
    expect(line).toContain('since the last snapshot')
  })

  test('any policy but noeviction is named, volatile ones included (results, idempotency keys and presence have TTLs)', () => {
    for (const policy of ['allkeys-lru', 'volatile-lru', 'volatile-ttl', 'allkeys-random']) {
      const lines = riskySettings({ ...safe, maxmemoryPolicy: policy }, URL)
      expect(lines.length).toBe(1)
      expect(lines[0]).toContain(`maxmemory-policy ${policy}`)
    }
  })

  test('CONFIG GET answers read as a map (RESP3) or a list (RESP2)', () => {
    expect(configValue({ appendonly: 'no' }, 'appendonly')).toBe('no')
    expect(configValue(['save', ''], 'save')).toBe('')
    expect(() => configValue([], 'save')).toThrow('CONFIG GET save gave no value')
  })
})
