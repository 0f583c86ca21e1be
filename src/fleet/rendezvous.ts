/**
 * Weighted rendezvous hashing (highest random weight): every (key, member) pair gets a score from a
 * hash, and a key goes to the member with the highest score. No table is kept: any instance, at
 * any time, ranks the same members the same way for a key. When a member joins it takes only the
 * keys it now outscores (1/n of them for n equal members); when one leaves only its own keys move,
 * each to its next-ranked member — which is also where a retry of that key goes.
 *
 * Weighted as in Schindelhauer and Schomaker's "Weighted distributed hash tables": score =
 * weight / -ln(u), u the pair's hash mapped into (0, 1), so a member's share of keys is its share
 * of the total weight. The member's own hash is computed once, when it joins (`memberHash`); a pick
 * mixes it with the key's seed (`rendezvousDraw`), a few integer operations per member. Among
 * members of one weight the highest draw wins, so the rest of u and its logarithm are computed once
 * per distinct weight (Balancer.pickByKey). Pure: no clock, no I/O.
 */

/** A member's 32-bit hash, kept with it so a keyed pick does not hash every member's name again. */
export function memberHash(id: string): number {
  return hash53(id, 0) >>> 0
}

/** A key's two 32-bit seeds, computed once per pick. */
export function keySeeds(key: string): { low: number; high: number } {
  const hash = hash53(key, 0x9e3779b9)
  return { low: hash >>> 0, high: Math.floor(hash / 2 ** 32) }
}

/**
 * The pair's draw, first 32 bits: the member's hash mixed with the key's low seed (murmur3's
 * finalizer). Members of one weight are ranked by it alone; `rendezvousUnit` completes it only for
 * the one that wins (and for ties, which decide by the full draw).
 */
export function rendezvousDraw(member: number, low: number): number {
  return fmix32(member ^ low) >>> 0
}

/** The pair's uniform value in (0, 1), 53 bits: `draw` followed by 21 bits more from the key's high seed. */
export function rendezvousUnit(member: number, draw: number, high: number): number {
  const more = fmix32(draw ^ high ^ member) >>> 11
  // (h + 0.5) / 2^53 lies strictly inside (0, 1): the logarithm in rendezvousScore is finite and negative.
  return (draw * 2 ** 21 + more + 0.5) / 2 ** 53
}

/** The weighted score of a draw: the member with the highest wins the key. */
export function rendezvousScore(weight: number, unit: number): number {
  return weight / -Math.log(unit)
}

function fmix32(value: number): number {
  let h = value
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h
}

/** cyrb53 (bryc, public domain): a fast 53-bit string hash with good avalanche. Not cryptographic; it needs only to spread. */
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
