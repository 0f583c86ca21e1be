import { describe, expect, test } from 'bun:test'
import { RetryBudget } from '../../../src/tasks/retry-budget.ts'

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
})
