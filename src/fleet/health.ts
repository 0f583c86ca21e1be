import type { HealthState } from '../wire/names.ts'

/**
 * Passive health, as a state machine per client: consecutive failures eject a client for a back-off
 * that doubles per ejection; when it ends the client is on probation, and one trial task decides.
 * Pure: each step takes the time and changes only the record it is given; the registry keeps the
 * balancers and the events in step with what these return.
 */
export interface HealthPolicy {
  failuresToEject: number
  ejectionMs: number
  maxEjectionMs: number
  maxEjectedPercent: number
  /** health.slow_start in ms: the ramp after a join or a return from ejection (src/fleet/slow-start.ts); 0 or absent: none. */
  slowStartMs?: number
}

export interface HealthRecord {
  state: HealthState
  consecutiveFailures: number
  ejections: number
  ejectedUntil: number
  /** When it last came back from an ejection; a long healthy run forgives old ejections. */
  recoveredAt: number
  trialInFlight: boolean
}

/** A client that just registered: healthy, with nothing held against it. */
export function freshHealth(now: number): HealthRecord {
  return { state: 'healthy', consecutiveFailures: 0, ejections: 0, ejectedUntil: 0, recoveredAt: now, trialInFlight: false }
}

/** Whether it may be given a task: healthy or failing, or on probation with no trial under way. */
export function isEligible(health: HealthRecord): boolean {
  return health.state === 'healthy' || health.state === 'failing' || (health.state === 'probation' && !health.trialInFlight)
}

/** An attempt begins: a client on probation is on its trial, and gets no other task until it ends. True if it started one. */
export function beginAttempt(health: HealthRecord): boolean {
  if (health.state !== 'probation' || health.trialInFlight) return false
  health.trialInFlight = true
  return true
}

/**
 * An answer (a 4xx included: that is about the payload). True if it changed the state: a client on
 * probation passed its trial, or a failing one answered (it never left service: no new recovery).
 */
export function succeed(health: HealthRecord, now: number): boolean {
  health.consecutiveFailures = 0
  if (health.state === 'failing') {
    health.state = 'healthy'
    return true
  }
  // An answer to an attempt begun before the ejection does not end the back-off: the trial decides.
  if (health.state !== 'probation') return false
  health.state = 'healthy'
  health.trialInFlight = false
  health.recoveredAt = now
  return true
}

/**
 * A failure the client is to blame for (refused, reset, 5xx, timeout). Ejects it once the failures
 * reach the threshold and `mayEject()` allows it, or at once when it fails its trial; past the
 * threshold and kept by `mayEject()`, it is failing. True if the state changed.
 */
export function fail(health: HealthRecord, now: number, policy: HealthPolicy, mayEject: () => boolean): boolean {
  health.consecutiveFailures++
  if (health.state === 'ejected') return false
  const failedTrial = health.state === 'probation'
  if (!failedTrial && health.consecutiveFailures < policy.failuresToEject) return false
  if (!failedTrial && !mayEject()) {
    // Kept in service so its pool is not left empty, but shown for what it is.
    if (health.state === 'failing') return false
    health.state = 'failing'
    return true
  }
  // A client healthy for longer than the longest back-off starts over; a failed trial never does.
  if (!failedTrial && now - health.recoveredAt > policy.maxEjectionMs) health.ejections = 0
  health.ejections++
  health.state = 'ejected'
  health.trialInFlight = false
  health.ejectedUntil = now + Math.min(policy.maxEjectionMs, policy.ejectionMs * 2 ** (health.ejections - 1))
  return true
}

/**
 * An operator's ejection (POST /clients/{node_id}/eject): ejected for `ms` whatever its failures,
 * counted as an ejection so a repeat offender's next back-off doubles as health's own would.
 */
export function ejectFor(health: HealthRecord, now: number, ms: number): void {
  health.ejections++
  health.state = 'ejected'
  health.trialInFlight = false
  health.ejectedUntil = now + ms
}

/**
 * An attempt that says nothing of the client's health (its answer was too large, the server is
 * stopping) still ends a trial, without a verdict: the next task is the next trial. Without this a
 * client would stay on probation with no trial in flight, which nothing would ever end. True if it ended one.
 */
export function noVerdict(health: HealthRecord): boolean {
  if (health.state !== 'probation' || !health.trialInFlight) return false
  health.trialInFlight = false
  return true
}

/** Its back-off is over: on probation. True if it was ejected and is now on probation. */
export function endBackoff(health: HealthRecord, now: number): boolean {
  if (health.state !== 'ejected' || health.ejectedUntil > now) return false
  health.state = 'probation'
  return true
}

/** Whether one more of a pool's clients may be ejected: at most max_ejected_percent of them at once. */
export function mayEjectAnother(inPool: number, ejectedInPool: number, policy: HealthPolicy): boolean {
  return ejectedInPool + 1 <= Math.floor((inPool * policy.maxEjectedPercent) / 100)
}
