import type { RedisConnection } from './redis-connection.ts'

/**
 * A large relayed answer, handed from its holder to its origin through a Redis list instead of
 * pub/sub: Redis cuts a subscriber whose unread messages pass `client-output-buffer-limit pubsub`
 * (32 MB, or 8 MB for a minute, by default), which would fail everything the origin relays. The list
 * holds the answer in parts, each its own command both ways, so no single command carries tens of MB
 * (one would hold up every other command on that connection, and meet command_timeout).
 */

/** Answers longer than this (UTF-16 units: at most 3 × as many bytes) are spilled; shorter ones go in the reply. */
export const SPILL_OVER_CHARS = 256 * 1024
/** A part's length, in UTF-16 units. */
const PART_CHARS = 256 * 1024
/** The origin reads a spilled answer as soon as the reply comes; one it never reads (it died, the task ended) goes after this. */
const SPILL_TTL_MS = 30_000

/** `text` in parts of at most `partChars` UTF-16 units, never splitting a surrogate pair (Redis stores UTF-8). Pure. */
export function spillParts(text: string, partChars = PART_CHARS): string[] {
  const parts: string[] = []
  for (let start = 0; start < text.length; ) {
    let end = Math.min(text.length, start + partChars)
    const last = text.charCodeAt(end - 1)
    if (end < text.length && last >= 0xd800 && last <= 0xdbff && end - 1 > start) end--
    parts.push(text.slice(start, end))
    start = end
  }
  return parts
}

/** Sets `text` at `ref` in parts; how many. Commands go out back to back, not one round trip each. */
export async function spill(connection: RedisConnection, ref: string, text: string): Promise<number> {
  const parts = spillParts(text)
  await connection.send('RPUSH', [ref, parts[0]!])
  // The expiry first: a holder that dies half-way leaves nothing for ever.
  await Promise.all([connection.send('PEXPIRE', [ref, String(SPILL_TTL_MS)]), ...parts.slice(1).map((part) => connection.send('RPUSH', [ref, part]))])
  return parts.length
}

/** Takes the `parts` parts at `ref` (the list is gone after); undefined if any is missing (expired, or never all set). */
export async function unspill(connection: RedisConnection, ref: string, parts: number): Promise<string | undefined> {
  // Pipelined, one part a reply: no single reply carries the whole answer.
  const taken = await Promise.all(Array.from({ length: parts }, () => connection.send('LPOP', [ref])))
  if (taken.some((part) => typeof part !== 'string')) {
    dropSpilled(connection, ref)
    return undefined
  }
  return taken.join('')
}

/** Drops a spilled answer nobody will read (its attempt ended before the reply came). */
export function dropSpilled(connection: RedisConnection, ref: string): void {
  void connection.send('DEL', [ref]).catch(() => undefined)
}
