import { type Load, pickLeastRequest } from './least-request.ts'
import { keySeeds, memberHash, rendezvousDraw, rendezvousScore, rendezvousUnit } from './rendezvous.ts'

/**
 * Smooth weighted round-robin (nginx's algorithm: every pick, each member gains its weight, the
 * richest is chosen and pays the total weight back) without touching every member on each pick.
 *
 * Why it is fast: a member's "current" after `step` picks is `key + weight * step`, so members of
 * equal weight keep their relative order between picks. Members are grouped by weight into max-heaps
 * on `key`; a pick compares only the top of each weight class and re-heaps one member. Cost per pick:
 * O(distinct weights + log n) instead of O(n), with the exact nginx sequence (ties go to the member
 * added first): weights 5:1:1 give a a b a c a a. The tops' keys sit in a flat array beside the
 * weights, so the per-class scan is a tight loop over numbers (a few ns per distinct weight).
 *
 * Pure: no clock, no I/O.
 */
export class Balancer<Id> {
  /**
   * Members by id, for the id API (set, remove, has, weightOf): made at its first use. The registry
   * holds each client's members itself (join, reweigh, leave), so its balancers have no such map: an
   * entry of a Map costs about 170 bytes of heap, twice an Entry, and a client sits in a balancer per
   * region of its chain.
   */
  private byId: Map<Id, Entry<Id>> | undefined
  /** One heap per distinct weight; an array, not a map, because pick walks it every time. */
  private classes: WeightClass<Id>[] = []
  /** `classes[i].heap[0].key` and `classes[i].weight`, kept in step, for pick's scan. */
  private readonly topKeys: number[] = []
  private readonly classWeights: number[] = []
  /** Every member in one flat array, for least-request's random draws (src/fleet/least-request.ts). */
  private readonly members: Entry<Id>[] = []
  private totalWeight = 0
  private step = 0
  private nextOrder = 0

  get size(): number {
    return this.members.length
  }

  has(id: Id): boolean {
    return this.byId?.has(id) === true
  }

  weightOf(id: Id): number | undefined {
    return this.byId?.get(id)?.weight
  }

  /**
   * Adds a member, or changes its weight keeping its accumulated credit. Weight 0 removes it (drain).
   * `load` is what least-request reads of it (the client record: its tasks in flight).
   */
  set(id: Id, weight: number, load: Load = NO_LOAD): void {
    if (!(weight > 0)) {
      this.remove(id)
      return
    }
    this.byId ??= new Map()
    const existing = this.byId.get(id)
    if (existing) this.reweigh(existing, weight, load)
    else this.byId.set(id, this.join(id, weight, load) as Entry<Id>)
  }

  remove(id: Id): void {
    const entry = this.byId?.get(id)
    if (!entry) return
    this.byId!.delete(id)
    this.leave(entry)
  }

  /** Adds a member (weight > 0) and returns it: whoever holds it changes or removes it with reweigh and leave, with no lookup by id. */
  join(id: Id, weight: number, load: Load = NO_LOAD): Member<Id> {
    // A newcomer starts with zero credit, as in nginx.
    const entry: Entry<Id> = {
      id,
      weight,
      key: -weight * this.step,
      order: this.nextOrder++,
      index: -1,
      hash: memberHash(String(id)),
      slot: this.members.length,
      load,
    }
    this.members.push(entry)
    this.attach(entry)
    return entry
  }

  /** Changes a member's weight (> 0) keeping its accumulated credit, and what least-request reads of its load. */
  reweigh(member: Member<Id>, weight: number, load: Load = member.load): void {
    const entry = member as Entry<Id>
    // A node that registered again is a new record under the same id.
    entry.load = load
    if (entry.weight === weight) return
    const current = entry.key + entry.weight * this.step
    this.detach(entry)
    entry.weight = weight
    entry.key = current - weight * this.step
    this.attach(entry)
  }

  /** Removes a member; one that is not (or no longer) in this balancer is left alone. */
  leave(member: Member<Id>): void {
    const entry = member as Entry<Id>
    if (this.members[entry.slot] !== entry) return
    this.detach(entry)
    // The last member takes its place: O(1), and the order of the array means nothing.
    const last = this.members.pop()!
    if (last !== entry) {
      this.members[entry.slot] = last
      last.slot = entry.slot
    }
  }

  /** Least-request instead of round-robin: the less loaded of two random members (src/fleet/least-request.ts); leaves the round-robin credit alone. */
  pickLeastLoaded(random: () => number, exclude?: Excluded<Id>): Id | undefined {
    return pickLeastRequest(this.members, random, exclude)
  }

  /** The next member in smooth weighted order, skipping `exclude`; undefined if none is left. */
  pick(exclude?: Excluded<Id>): Id | undefined {
    if (this.members.length === 0) return undefined
    this.step++
    if (this.step > REBASE_AT_STEP) this.rebase()
    const richestAt = this.richestClass()
    const richest = this.classes[richestAt]!.heap[0]!
    // Every other member is poorer than the richest top, or as rich and added later: if the richest
    // is not excluded it wins, whatever else is excluded. Only a retry that excludes it looks further.
    if (!exclude?.has(richest.id)) return this.charge(richestAt, richest)
    return this.pickExcluding(exclude)
  }

  /**
   * The member `key` belongs to by weighted rendezvous hashing (src/fleet/rendezvous.ts), skipping
   * `exclude`: sticky routing, which leaves the round-robin credit alone. It looks at every member
   * (that is what keeping no table costs), but per member only mixes two integers; the logarithm is
   * taken once per weight class, for the class's best draw. `exclude` is asked only about a member
   * that would win its class, so a retry costs no more than a first pick.
   */
  pickByKey(key: string, exclude?: Excluded<Id>): Id | undefined {
    const { low, high } = keySeeds(key)
    let best: Id | undefined
    let bestScore = Number.NEGATIVE_INFINITY
    for (const { weight, heap } of this.classes) {
      let classBest: Entry<Id> | undefined
      let classDraw = -1
      for (let at = 0; at < heap.length; at++) {
        const entry = heap[at]!
        const draw = rendezvousDraw(entry.hash, low)
        if (draw < classDraw) continue
        // A tie of 32-bit draws (rare) is decided by the full draw, so the heap's order never decides.
        if (draw === classDraw && rendezvousUnit(entry.hash, draw, high) <= rendezvousUnit(classBest!.hash, draw, high)) continue
        if (exclude?.has(entry.id)) continue
        classBest = entry
        classDraw = draw
      }
      if (!classBest) continue
      const score = rendezvousScore(weight, rendezvousUnit(classBest.hash, classDraw, high))
      if (score > bestScore) {
        best = classBest.id
        bestScore = score
      }
    }
    return best
  }

  /** The class whose top member has the most credit now; ties go to the member added first. */
  private richestClass(): number {
    const { topKeys, classWeights, step } = this
    let bestAt = 0
    let bestCurrent = topKeys[0]! + classWeights[0]! * step
    for (let at = 1; at < topKeys.length; at++) {
      const current = topKeys[at]! + classWeights[at]! * step
      if (current > bestCurrent || (current === bestCurrent && this.classes[at]!.heap[0]!.order < this.classes[bestAt]!.heap[0]!.order)) {
        bestAt = at
        bestCurrent = current
      }
    }
    return bestAt
  }

  /** pick() when the richest member is excluded: pops excluded tops aside in each class. */
  private pickExcluding(exclude: Excluded<Id>): Id | undefined {
    const skipped: Array<[WeightClass<Id>, Entry<Id>]> = []
    let best: Entry<Id> | undefined
    let bestAt = -1
    let bestCurrent = 0
    for (let at = 0; at < this.classes.length; at++) {
      const weightClass = this.classes[at]!
      let top = weightClass.heap[0]
      // Excluded members are few (the attempts of one task), so popping them aside is cheap.
      while (top && exclude.has(top.id)) {
        skipped.push([weightClass, top])
        heapRemove(weightClass.heap, 0)
        top = weightClass.heap[0]
      }
      if (!top) continue
      const current = top.key + top.weight * this.step
      if (!best || current > bestCurrent || (current === bestCurrent && top.order < best.order)) {
        best = top
        bestAt = at
        bestCurrent = current
      }
    }
    for (const [weightClass, entry] of skipped) heapPush(weightClass.heap, entry)
    if (!best) {
      // Nothing eligible: undo the step so an all-excluded call does not shift the rotation.
      this.step--
      return undefined
    }
    return this.charge(bestAt, best)
  }

  /** The chosen member (of the class at `at`) pays the total weight back. */
  private charge(at: number, chosen: Entry<Id>): Id {
    const { heap } = this.classes[at]!
    chosen.key -= this.totalWeight
    siftDown(heap, chosen.index)
    this.topKeys[at] = heap[0]!.key
    return chosen.id
  }

  private attach(entry: Entry<Id>): void {
    let at = this.classes.findIndex((c) => c.weight === entry.weight)
    if (at === -1) {
      at = this.classes.push({ weight: entry.weight, heap: [] }) - 1
      this.classWeights.push(entry.weight)
      this.topKeys.push(0)
    }
    const { heap } = this.classes[at]!
    heapPush(heap, entry)
    this.topKeys[at] = heap[0]!.key
    this.totalWeight += entry.weight
  }

  private detach(entry: Entry<Id>): void {
    const at = this.classes.findIndex((c) => c.weight === entry.weight)
    const weightClass = this.classes[at]
    if (!weightClass) return
    heapRemove(weightClass.heap, entry.index)
    if (weightClass.heap.length === 0) {
      this.classes.splice(at, 1)
      this.classWeights.splice(at, 1)
      this.topKeys.splice(at, 1)
    } else this.topKeys[at] = weightClass.heap[0]!.key
    this.totalWeight -= entry.weight
  }

  /** Keeps keys far from float precision limits on a server that runs for years. */
  private rebase(): void {
    for (const entry of this.members) entry.key += entry.weight * this.step
    this.step = 0
    this.classes.forEach((weightClass, at) => {
      this.topKeys[at] = weightClass.heap[0]!.key
    })
  }
}

/** Members a pick skips: a Set, or anything that answers `has`. */
export interface Excluded<Id> {
  has(id: Id): boolean
}

const REBASE_AT_STEP = 2 ** 36

/** A member as its holder sees it (from join): opaque but for its id and load. */
export interface Member<Id> {
  readonly id: Id
  readonly load: Load
}

interface Entry<Id> {
  id: Id
  weight: number
  /** current = key + weight * step */
  key: number
  /** Insertion order; breaks ties like nginx's list order. */
  order: number
  /** Position in its weight class's heap. */
  index: number
  /** Its rendezvous hash, computed once (src/fleet/rendezvous.ts). */
  hash: number
  /** Position in `members`. */
  slot: number
  /** Its tasks in flight, for least-request. */
  load: Load
}

/** A member added without a load: never busy, for users of round-robin alone. */
const NO_LOAD: Load = Object.freeze({ inFlight: 0 })

interface WeightClass<Id> {
  weight: number
  heap: Entry<Id>[]
}

function before<Id>(a: Entry<Id>, b: Entry<Id>): boolean {
  return a.key > b.key || (a.key === b.key && a.order < b.order)
}

function heapPush<Id>(heap: Entry<Id>[], entry: Entry<Id>): void {
  entry.index = heap.length
  heap.push(entry)
  siftUp(heap, entry.index)
}

function heapRemove<Id>(heap: Entry<Id>[], index: number): void {
  const last = heap.pop()
  if (!last || index >= heap.length) return
  heap[index] = last
  last.index = index
  siftUp(heap, index)
  siftDown(heap, last.index)
}

function siftUp<Id>(heap: Entry<Id>[], index: number): void {
  const entry = heap[index]!
  while (index > 0) {
    const parentIndex = (index - 1) >> 1
    const parent = heap[parentIndex]!
    if (!before(entry, parent)) break
    heap[index] = parent
    parent.index = index
    index = parentIndex
  }
  heap[index] = entry
  entry.index = index
}

function siftDown<Id>(heap: Entry<Id>[], index: number): void {
  const entry = heap[index]!
  const length = heap.length
  for (;;) {
    const left = 2 * index + 1
    if (left >= length) break
    const right = left + 1
    let child = left
    if (right < length && before(heap[right]!, heap[left]!)) child = right
    const candidate = heap[child]!
    if (!before(candidate, entry)) break
    heap[index] = candidate
    candidate.index = index
    index = child
  }
  heap[index] = entry
  entry.index = index
}
