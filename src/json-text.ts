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

export interface ObjectScan {
  /** How deeply arrays and objects nest, counting the object scanned as 1. */
  depth: number
  /** Each member of the object: the raw text of its value, as [start, end) offsets into the text. */
  members: Map<string, [number, number]>
}

const QUOTE = 0x22
const BACKSLASH = 0x5c

/**
 * Scans the object that spans `text[from, to)`. A key seen twice keeps its last value, as JSON.parse
 * does. Returns undefined if the range is not an object. On text that does not parse it never throws,
 * but what it finds means something only for valid JSON.
 */
export function scanObject(text: string, from = 0, to = text.length): ObjectScan | undefined {
  let at = skipSpace(text, from, to)
  if (text.charCodeAt(at) !== 0x7b /* { */) return undefined
  const members = new Map<string, [number, number]>()
  let depth = 0
  let maxDepth = 0
  let key: string | undefined
  let valueStart = -1
  for (; at < to; at++) {
    const char = text.charCodeAt(at)
    if (char === QUOTE) {
      const end = stringEnd(text, at, to)
      // At depth 1 a string before the colon is a member's key.
      if (depth === 1 && valueStart === -1) key = decodeKey(text, at, end)
      at = end - 1
      continue
    }
    switch (char) {
      case 0x7b: // {
      case 0x5b: // [
        if (++depth > maxDepth) maxDepth = depth
        break
      case 0x7d: // }
      case 0x5d: // ]
        if (depth === 1) closeMember()
        depth--
        break
      case 0x3a: // :
        if (depth === 1) valueStart = at + 1
        break
      case 0x2c: // ,
        if (depth === 1) closeMember()
        break
    }
    if (depth === 0) break
  }
  return { depth: maxDepth, members }

  function closeMember(): void {
    if (key !== undefined && valueStart !== -1) members.set(key, trim(text, valueStart, at))
    key = undefined
    valueStart = -1
  }
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

function decodeKey(text: string, start: number, end: number): string {
  const raw = text.slice(start + 1, end - 1)
  if (!raw.includes('\\')) return raw
  // Keys with escapes ("pay\u006coad") mean what JSON.parse makes of them; text that does not parse keeps them raw.
  try {
    return JSON.parse(text.slice(start, end)) as string
  } catch {
    return raw
  }
}

function skipSpace(text: string, at: number, to: number): number {
  while (at < to && isSpace(text.charCodeAt(at))) at++
  return at
}

function trim(text: string, start: number, end: number): [number, number] {
  start = skipSpace(text, start, end)
  while (end > start && isSpace(text.charCodeAt(end - 1))) end--
  return [start, end]
}

function isSpace(char: number): boolean {
  return char === 0x20 || char === 0x0a || char === 0x0d || char === 0x09
}
