/**
 * Least-request balancing (Envoy's `LEAST_REQUEST`, after Mitzenmacher's power of two choices): two
 * members drawn at random, the one with fewer tasks in flight per unit of weight wins. O(1) per pick
 * whatever the pool's size, and a slow agent, whose tasks pile up, is chosen less often than a fast
 * one, which round-robin cannot see. Weights still count: the load compared is (in flight + 1) /
 * weight, so at equal load a client of weight 4 takes four times the tasks of a client of weight 1,
 * and a client in slow start (a reduced weight) looks busier than it is.
 */

/** What the pick reads of a member's load: the client record itself, so a pick looks nothing up. */
export interface Load {
  inFlight: number
}

/** A member as the pick sees it. */
export interface LoadedMember<Id> {
  id: Id
  weight: number
  load: Load
}

/** Draws before giving up on finding a member that is not excluded, and scanning instead (a retry in a pool of mostly tried members). */
const DRAWS = 4

/**
 * The less loaded of two random members, skipping `exclude`; undefined if every member is excluded.
 * `random` gives [0, 1) (injected, so tests are exact). Each member carries its load (the client
 * record), so a pick is two array reads and no lookup by id: O(1) and cheap at any pool size.
 */
export function pickLeastRequest<Id>(members: readonly LoadedMember<Id>[], random: () => number, exclude?: { has(id: Id): boolean }): Id | undefined {
  const count = members.length
  if (count === 0) return undefined
  if (count === 1) {
    const only = members[0]!
    return exclude?.has(only.id) ? undefined : only.id
  }
  const firstAt = draw(members, random, exclude, -1)
  if (firstAt === -1) return scan(members, exclude)
  const first = members[firstAt]!
  // Two different members: in a pool of two, the less loaded always wins (with replacement, half the draws would be one member twice).
  const secondAt = draw(members, random, exclude, firstAt)
  if (secondAt === -1) return first.id
  const second = members[secondAt]!
  // Ties go to the first drawn: it is as random as the draw.
  return (second.load.inFlight + 1) / second.weight < (first.load.inFlight + 1) / first.weight ? second.id : first.id
}

/** A random member's index other than `other` (-1: none), not excluded; -1 if the draws found none. */
function draw<Id>(members: readonly LoadedMember<Id>[], random: () => number, exclude: { has(id: Id): boolean } | undefined, other: number): number {
  const choices = other === -1 ? members.length : members.length - 1
  for (let tries = 0; tries < DRAWS; tries++) {
    let at = Math.floor(random() * choices)
    if (other !== -1 && at >= other) at++
    if (!exclude?.has(members[at]!.id)) return at
  }
  return -1
}

/** The least loaded member not excluded, by looking at them all: only when draws keep hitting excluded ones. */
function scan<Id>(members: readonly LoadedMember<Id>[], exclude?: { has(id: Id): boolean }): Id | undefined {
  let best: LoadedMember<Id> | undefined
  let bestLoad = Number.POSITIVE_INFINITY
  for (const member of members) {
    if (exclude?.has(member.id)) continue
    const load = (member.load.inFlight + 1) / member.weight
    if (load < bestLoad) {
      best = member
      bestLoad = load
    }
  }
  return best?.id
}
