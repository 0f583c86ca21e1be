import { describe, expect, test } from 'bun:test'
import {
  beginAttempt,
  endBackoff,
  fail,
  freshHealth,
  type HealthPolicy,
  type HealthRecord,
  isEligible,
  mayEjectAnother,
  noVerdict,
  succeed,
} from '../../../src/fleet/health.ts'

const POLICY: HealthPolicy = { failuresToEject: 3, ejectionMs: 1000, maxEjectionMs: 8000, maxEjectedPercent: 50 }
const allow = () => true

/** Fails `times` times at `now` with ejection allowed; returns what the last failure returned. */
function failTimes(health: HealthRecord, times: number, now: number, policy = POLICY): boolean {
  let ejected = false
  for (let i = 0; i < times; i++) ejected = fail(health, now, policy, allow)
  return ejected
}

/** Ejected → back-off over → on probation → its trial begins, all at `now`. */
function onTrial(health: HealthRecord, now: number): void {
  expect(endBackoff(health, now)).toBe(true)
  expect(beginAttempt(health)).toBe(true)
}

describe('health', () => {
  test('a new client is healthy with nothing held against it', () => {
    expect(freshHealth(500)).toEqual({ state: 'healthy', consecutiveFailures: 0, ejections: 0, ejectedUntil: 0, recoveredAt: 500, trialInFlight: false })
    expect(isEligible(freshHealth(500))).toBe(true)
  })

  test('failures below the threshold count but do not eject; the one that reaches it ejects for ejection_time', () => {
    const health = freshHealth(0)
    expect(fail(health, 100, POLICY, allow)).toBe(false)
    expect(fail(health, 100, POLICY, allow)).toBe(false)
    expect(health).toMatchObject({ state: 'healthy', consecutiveFailures: 2 })
    expect(fail(health, 100, POLICY, allow)).toBe(true)
    expect(health).toMatchObject({ state: 'ejected', consecutiveFailures: 3, ejections: 1, ejectedUntil: 1100 })
    expect(isEligible(health)).toBe(false)
  })

  test('mayEject is asked only at the threshold, and its veto keeps the client in service, failing', () => {
    const health = freshHealth(0)
    let asked = 0
    const veto = () => {
      asked++
      return false
    }
    fail(health, 10, POLICY, veto)
    fail(health, 10, POLICY, veto)
    expect(asked).toBe(0)
    // A change of state: kept in service, but no longer called healthy.
    expect(fail(health, 10, POLICY, veto)).toBe(true)
    expect(asked).toBe(1)
    expect(health).toMatchObject({ state: 'failing', consecutiveFailures: 3, ejections: 0 })
    expect(isEligible(health)).toBe(true)
    // Failing again and vetoed again: no change to report.
    expect(fail(health, 15, POLICY, veto)).toBe(false)
    expect(health).toMatchObject({ state: 'failing', consecutiveFailures: 4 })
    // Past the threshold, each further failure asks again; once allowed, it ejects.
    expect(fail(health, 20, POLICY, allow)).toBe(true)
    expect(health).toMatchObject({ state: 'ejected', consecutiveFailures: 5, ejectedUntil: 1020 })
  })

  test('a failing client that answers is healthy again, without counting as a return from ejection', () => {
    const health = freshHealth(0)
    for (let i = 0; i < 3; i++) fail(health, 10, POLICY, () => false)
    expect(health.state).toBe('failing')
    expect(succeed(health, 50)).toBe(true)
    expect(health).toMatchObject({ state: 'healthy', consecutiveFailures: 0, recoveredAt: 0, ejections: 0 })
  })

  test('a success resets the run of failures; a healthy client stays healthy and reports no change', () => {
    const health = freshHealth(0)
    failTimes(health, 2, 10)
    expect(succeed(health, 20)).toBe(false)
    expect(health).toMatchObject({ state: 'healthy', consecutiveFailures: 0, recoveredAt: 0 })
    expect(failTimes(health, 2, 30)).toBe(false)
    expect(health.state).toBe('healthy')
  })

  test('a success while ejected (from an attempt begun before the ejection) does not end the back-off', () => {
    // docs/routing.md: consecutive failures "eject a client for health.ejection_time ... when the back-off ends
    // the client is on probation and one trial task decides".
    const health = freshHealth(0)
    failTimes(health, 3, 0)
    expect(succeed(health, 10)).toBe(false)
    expect(health).toMatchObject({ state: 'ejected', ejectedUntil: 1000, ejections: 1 })
    expect(isEligible(health)).toBe(false)
  })

  test('a failure while ejected is counted, but neither ejects again nor moves the back-off', () => {
    const health = freshHealth(0)
    failTimes(health, 3, 0)
    expect(fail(health, 500, POLICY, allow)).toBe(false)
    expect(health).toMatchObject({ state: 'ejected', consecutiveFailures: 4, ejections: 1, ejectedUntil: 1000 })
  })

  test('the back-off ends at ejectedUntil, not a millisecond before, and puts the client on probation', () => {
    const health = freshHealth(0)
    failTimes(health, 3, 0)
    expect(endBackoff(health, 999)).toBe(false)
    expect(health.state).toBe('ejected')
    expect(endBackoff(health, 1000)).toBe(true)
    expect(health.state).toBe('probation')
    expect(isEligible(health)).toBe(true)
    // Only an ejected client ends a back-off.
    expect(endBackoff(health, 5000)).toBe(false)
    expect(endBackoff(freshHealth(0), 5000)).toBe(false)
  })

  test('on probation, the first attempt is its one trial: not eligible for another until it ends', () => {
    const health = freshHealth(0)
    failTimes(health, 3, 0)
    endBackoff(health, 1000)
    expect(beginAttempt(health)).toBe(true)
    expect(health.trialInFlight).toBe(true)
    expect(isEligible(health)).toBe(false)
    expect(beginAttempt(health)).toBe(false)
  })

  test('an attempt on a healthy client is no trial', () => {
    const health = freshHealth(0)
    expect(beginAttempt(health)).toBe(false)
    expect(health.trialInFlight).toBe(false)
  })

  test('a trial that succeeds makes the client healthy again, recovered from that moment', () => {
    const health = freshHealth(0)
    failTimes(health, 3, 0)
    onTrial(health, 1000)
    expect(succeed(health, 1200)).toBe(true)
    expect(health).toMatchObject({ state: 'healthy', consecutiveFailures: 0, trialInFlight: false, recoveredAt: 1200, ejections: 1 })
  })

  test('a trial that fails ejects at once, whatever the threshold and without asking mayEject', () => {
    const health = freshHealth(0)
    failTimes(health, 3, 0)
    onTrial(health, 1000)
    let asked = false
    expect(
      fail(health, 1100, POLICY, () => {
        asked = true
        return false
      }),
    ).toBe(true)
    expect(asked).toBe(false)
    expect(health).toMatchObject({ state: 'ejected', trialInFlight: false, ejections: 2, ejectedUntil: 1100 + 2000 })
  })

  test('each failed trial doubles the back-off, up to max_ejection_time', () => {
    const health = freshHealth(0)
    // Ejected at 0: the first back-off ends at ejectedUntil.
    failTimes(health, 3, 0)
    const backoffs = [health.ejectedUntil]
    let now: number
    for (let trial = 0; trial < 5; trial++) {
      now = health.ejectedUntil
      onTrial(health, now)
      fail(health, now, POLICY, allow)
      backoffs.push(health.ejectedUntil - now)
    }
    expect(backoffs).toEqual([1000, 2000, 4000, 8000, 8000, 8000])
    expect(health.ejections).toBe(6)
  })

  test('a healthy run longer than max_ejection_time forgives past ejections; one of exactly that long does not', () => {
    const ejectRecoverAndFailAgain = (healthyForMs: number) => {
      const health = freshHealth(0)
      failTimes(health, 3, 0)
      onTrial(health, 1000)
      fail(health, 1000, POLICY, allow)
      onTrial(health, 3000)
      succeed(health, 3000)
      expect(health.ejections).toBe(2)
      failTimes(health, 3, 3000 + healthyForMs)
      return { backoffMs: health.ejectedUntil - (3000 + healthyForMs), ejections: health.ejections }
    }
    expect(ejectRecoverAndFailAgain(POLICY.maxEjectionMs + 1)).toEqual({ backoffMs: 1000, ejections: 1 })
    expect(ejectRecoverAndFailAgain(POLICY.maxEjectionMs)).toEqual({ backoffMs: 4000, ejections: 3 })
  })

  test('a failed trial is never forgiven, however long ago the client last recovered', () => {
    const health = freshHealth(0)
    failTimes(health, 3, 0)
    // Ejected a long time: the trial comes far past max_ejection_time after recoveredAt (0).
    onTrial(health, 100_000)
    fail(health, 100_000, POLICY, allow)
    expect(health).toMatchObject({ ejections: 2, ejectedUntil: 102_000 })
  })

  test('an attempt without a verdict ends the trial and leaves the client on probation for the next task', () => {
    const health = freshHealth(0)
    failTimes(health, 3, 0)
    onTrial(health, 1000)
    expect(noVerdict(health)).toBe(true)
    expect(health).toMatchObject({ state: 'probation', trialInFlight: false, ejections: 1 })
    expect(isEligible(health)).toBe(true)
    // Nothing to end the second time, nor on a healthy client.
    expect(noVerdict(health)).toBe(false)
    expect(noVerdict(freshHealth(0))).toBe(false)
    // The next task is the next trial.
    expect(beginAttempt(health)).toBe(true)
  })

  test('at most max_ejected_percent of a pool, rounded down, may be ejected at once', () => {
    const cases: Array<[inPool: number, ejected: number, percent: number, allowed: boolean]> = [
      // floor(3 * 50%) = 1
      [3, 0, 50, true],
      [3, 1, 50, false],
      // floor(1 * 50%) = 0: a client alone is never ejected at 50%.
      [1, 0, 50, false],
      [2, 0, 50, true],
      [2, 1, 50, false],
      [4, 1, 50, true],
      [4, 2, 50, false],
      [10, 3, 33, false],
      [10, 2, 33, true],
      [5, 0, 0, false],
      [2, 1, 100, true],
      [2, 2, 100, false],
    ]
    const results = cases.map(([inPool, ejected, percent]) => mayEjectAnother(inPool, ejected, { ...POLICY, maxEjectedPercent: percent }))
    expect(results).toEqual(cases.map(([, , , allowed]) => allowed))
  })
})
