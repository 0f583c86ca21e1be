/**
 * Weighted rendezvous hashing (highest random weight): every (key, member) pair gets a score from a
 * hash, and a key goes to the member with the highest score. No table is kept: any instance, at
 * any time, ranks the same members the same way for a key. When a member joins it takes only the
 * keys it now outscores (1/n of them for n equal members); when one leaves only its own keys move,
 * each to its next-ranked member — which is also where a retry of that key goes.
 *
 * Weighted as in Schindelhauer and Schomaker's "Weighted distributed hash tables": score =
 * weight / -ln(u), u the hash mapped into (0, 1), so a member's share of keys is its share of the
 * total weight. Pure: no clock, no I/O.
 */

/** Members a ranking skips. */
export interface Skipped<Id> {
  has(id: Id): boolean
}

/** The member `key` belongs to among `members` (id and weight), skipping `exclude`; undefined if none is left. */
export function rendezvousPick<Id extends string>(key: string, members: Iterable<readonly [Id, number]>, exclude?: Skipped<Id>): Id | undefined {
  const keySeed = hash53(key, 0x9e3779b9) % 0x100000000
  let best: Id | undefined
  let bestScore = Number.NEGATIVE_INFINITY
  for (const [id, weight] of members) {
    if (!(weight > 0) || exclude?.has(id)) continue
    const score = rendezvousScore(keySeed, id, weight)
    // Ties (practically never) go to the smaller id, so every instance agrees.
    if (score > bestScore || (score === bestScore && best !== undefined && id < best)) {
      best = id
      bestScore = score
    }
  }
  return best
}

function rendezvousScore(keySeed: number, id: string, weight: number): number {
  // (h + 0.5) / 2^53 lies strictly inside (0, 1): the logarithm is finite and negative.
  const unit = (hash53(id, keySeed) + 0.5) / 2 ** 53
  return weight / -Math.log(unit)
}

/**
 * cyrb53 (bryc, public domain): a fast 53-bit string hash with good avalanche, seeded by the key's
 * own hash so each key ranks members independently. Not cryptographic; it needs only to spread.
 */
function hash53(text: string, seed: number): number {
  let h1 = 0xdeadbeef ^ seed
  let h2 = 0x41c6ce57 ^ seed
  for (let i = 0; i < text.length; i++) {
    const char = text.charCodeAt(i)
    h1 = Math.imul(h1 ^ char, 2654435761)
    h2 = Math.imul(h2 ^ char, 1597334677)
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507)
  h1 ^= Math.imul(h2 ^ (h2 >>> 13), 3266489909)
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507)
  h2 ^= Math.imul(h1 ^ (h1 >>> 13), 3266489909)
  return 4294967296 * (2097151 & h2) + (h1 >>> 0)
}
