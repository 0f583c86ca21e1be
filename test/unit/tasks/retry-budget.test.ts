import { describe, expect, test } from 'bun:test'
import { MAX_UNNAMED_REGION_SERIES, OTHER_REGION_LABEL } from '../../../src/observe/region-labels.ts'
import { POOLS_KEPT_IDLE_WITHIN, RetryBudget } from '../../../src/tasks/retry-budget.ts'

describe('retry budget', () => {
  test('retrying tasks may be min (3) of a small pool, then percent (20 %) of its tasks in flight', () => {
    const budget = new RetryBudget(() => ({ percent: 20, min: 3 }))
    for (let n = 0; n < 5; n++) budget.started('eu')
    expect([1, 2, 3, 4].map(() => budget.mayRetry('eu'))).toEqual([true, true, true, false])
    for (let n = 0; n < 15; n++) budget.started('eu')
    // 20 in flight: 20 % is 4 retrying.
    expect([budget.mayRetry('eu'), budget.mayRetry('eu')]).toEqual([true, false])
    expect(budget.refused.get('eu')).toBe(2)
  })

  test('a retrying task that ends gives its share back; pools are counted apart', () => {
    const budget = new RetryBudget(() => ({ percent: 0, min: 1 }))
    budget.started('eu')
    budget.started('eu')
    budget.started('us')
    expect(budget.mayRetry('eu')).toBe(true)
    expect(budget.mayRetry('eu')).toBe(false)
    expect(budget.mayRetry('us')).toBe(true)
    budget.ended('eu', true)
    expect(budget.mayRetry('eu')).toBe(true)
    expect([...budget.refused]).toEqual([['eu', 1]])
  })

  test('pools agents moved through are forgotten once idle past POOLS_KEPT_IDLE_WITHIN (200 000 pools)', () => {
    const budget = new RetryBudget(() => ({ percent: 20, min: 3 }))
    budget.started('kept-busy')
    for (let i = 0; i < 200_000; i++) {
      budget.started(`pool-${i}`)
      budget.ended(`pool-${i}`, false)
    }
    expect(budget.trackedPools).toBeLessThanOrEqual(POOLS_KEPT_IDLE_WITHIN + 1)
    // A pool with a task in flight keeps its counts whatever the others do.
    for (let n = 0; n < 3; n++) expect(budget.mayRetry('kept-busy')).toBe(true)
    expect(budget.mayRetry('kept-busy')).toBe(false)
  })

  test("refusals are counted per pool for the hierarchy's pools and MAX_UNNAMED_REGION_SERIES others, the rest under (other)", () => {
    const budget = new RetryBudget(
      () => ({ percent: 0, min: 0 }),
      (pool) => pool === 'usa',
    )
    for (let i = 0; i < 50_000; i++) {
      budget.started(`pool-${i}`)
      expect(budget.mayRetry(`pool-${i}`)).toBe(false)
      budget.ended(`pool-${i}`, false)
    }
    budget.started('usa')
    expect(budget.mayRetry('usa')).toBe(false)
    expect(budget.refused.size).toBe(MAX_UNNAMED_REGION_SERIES + 2)
    expect(budget.refused.get('usa')).toBe(1)
    expect(budget.refused.get(OTHER_REGION_LABEL)).toBe(50_000 - MAX_UNNAMED_REGION_SERIES)
  })
})
