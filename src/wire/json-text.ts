/**
 * Reading JSON text without re-serializing it. A payload or an answer is passed on as the bytes it
 * came as: parsing and stringifying again would change big integers (12345678901234567890 →
 * 12345678901234567000), out-of-range numbers (1e400 → null) and duplicate keys. JSON.parse still
 * validates the text; these scans only find where a member's value starts and ends, and how deep the
 * text nests, which also guards JSON.stringify and every agent's parser against a stack overflow.
 *
 * Both are loops, never recursion, so no input can overflow the stack here either.
 */

/** Deeper than this is refused: far beyond real payloads, well within what JSON.stringify and agents' parsers survive. */
export const MAX_JSON_DEPTH = 1000

/** Where one member's value stands in an object's text, and how deeply that object nests. */
export interface MemberSpan {
  /** How deeply arrays and objects nest, counting the object scanned as 1. */
  depth: number
  /** The raw text of the member's value is [start, end); both -1 if the object has no such member. */
  start: number
  end: number
}

const QUOTE = 0x22
const BACKSLASH = 0x5c

/**
 * Finds member `key` of the object that spans `text[from, to)`, in one pass that also measures the
 * nesting. A key seen twice keeps its last value, as JSON.parse does. On text that does not parse it
 * never throws, but what it finds means something only for valid JSON. Written as one tight loop with
 * no closure and no allocation per member: it runs on every task and every WebSocket answer.
 */
export function memberSpan(text: string, key: string, from = 0, to = text.length): MemberSpan {
  let at = from
  while (at < to && isSpace(text.charCodeAt(at))) at++
  if (text.charCodeAt(at) !== 0x7b /* { */) return { depth: 0, start: -1, end: -1 }
  let depth = 0
  let maxDepth = 0
  let matched = false
  let valueStart = -1
  let start = -1
  let end = -1
  for (; at < to; at++) {
    const char = text.charCodeAt(at)
    if (char === QUOTE) {
      const close = stringEnd(text, at, to)
      // At depth 1 a string before the colon is a member's key.
      if (depth === 1 && valueStart === -1) matched = isKey(text, at, close, key)
      at = close - 1
    } else if (char === 0x7b || char === 0x5b) {
      if (++depth > maxDepth) maxDepth = depth
    } else if (char === 0x7d || char === 0x5d || char === 0x2c) {
      // A member ends at a comma or at the object's own closing brace, both at depth 1.
      if (depth === 1 && valueStart !== -1) {
        if (matched) {
          start = valueStart
          end = at
        }
        matched = false
        valueStart = -1
      }
      if (char !== 0x2c && --depth === 0) break
    } else if (char === 0x3a && depth === 1) valueStart = at + 1
  }
  if (start === -1) return { depth: maxDepth, start, end }
  while (start < end && isSpace(text.charCodeAt(start))) start++
  while (end > start && isSpace(text.charCodeAt(end - 1))) end--
  return { depth: maxDepth, start, end }
}

/** How deeply arrays and objects nest in `text` (0 for a scalar); strings are skipped. Valid or not, it never throws. */
export function nestingDepth(text: string): number {
  let depth = 0
  let maxDepth = 0
  const to = text.length
  for (let at = 0; at < to; at++) {
    const char = text.charCodeAt(at)
    if (char === QUOTE) at = stringEnd(text, at, to) - 1
    else if (char === 0x7b || char === 0x5b) {
      if (++depth > maxDepth) maxDepth = depth
    } else if (char === 0x7d || char === 0x5d) depth--
  }
  return maxDepth
}

/** The offset just past the string that opens at `at` (or `to` if it never closes). */
function stringEnd(text: string, at: number, to: number): number {
  let close = at
  for (;;) {
    close = text.indexOf('"', close + 1)
    if (close === -1 || close >= to) return to
    // A quote preceded by an odd run of backslashes is escaped.
    let backslashes = 0
    while (text.charCodeAt(close - 1 - backslashes) === BACKSLASH) backslashes++
    if (backslashes % 2 === 0) return close + 1
  }
}

/** Whether the string token text[start, end) is the key `key`. */
function isKey(text: string, start: number, end: number, key: string): boolean {
  const length = end - start - 2
  if (length === key.length) return text.startsWith(key, start + 1)
  // Only a key written with escapes ("pay\u006coad") is longer than what it means.
  if (length < key.length || text.lastIndexOf('\\', end) < start) return false
  try {
    return JSON.parse(text.slice(start, end)) === key
  } catch {
    return false
  }
}

function isSpace(char: number): boolean {
  return char === 0x20 || char === 0x0a || char === 0x0d || char === 0x09
}
