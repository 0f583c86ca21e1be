/**
 * Where JSON text first goes wrong. Bun's JSON.parse says what is wrong ("Expected '}'") but not
 * where; someone fixing a config file by hand needs the line and column. A loop with an explicit
 * stack, never recursion, so no nesting can overflow it.
 */

/** A 1-based line and column (in UTF-16 code units, as editors count most characters). */
export interface TextPosition {
  line: number
  column: number
}

const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y
const ESCAPED = new Set(['"', '\\', '/', 'b', 'f', 'n', 'r', 't'])
const HEX4 = /^[0-9a-fA-F]{4}$/

/** The position of the first character that makes `text` invalid JSON, or undefined when it is valid. */
export function syntaxErrorAt(text: string): TextPosition | undefined {
  const offset = syntaxErrorOffset(text)
  return offset === undefined ? undefined : positionOf(text, offset)
}

function positionOf(text: string, offset: number): TextPosition {
  const lineStart = text.lastIndexOf('\n', offset - 1) + 1
  let line = 1
  for (let at = text.indexOf('\n'); at !== -1 && at < offset; at = text.indexOf('\n', at + 1)) line++
  return { line, column: offset - lineStart + 1 }
}

function syntaxErrorOffset(text: string): number | undefined {
  const open: Array<'{' | '['> = []
  let at = 0
  /** What comes next: a value, a key, or a ',' / the container's end (at the top level: the end of the text). */
  let want: 'value' | 'key' | 'next' = 'value'
  /** Just after '{' or '[': the container may close at once. */
  let empty = false
  const skipSpace = () => {
    while (at < text.length && ' \t\n\r'.includes(text[at]!)) at++
  }
  /** Reads the string opening at `at`; false (with `at` on the fault) if it is not a valid one. */
  const readString = (): boolean => {
    for (at++; at < text.length; ) {
      const char = text[at]!
      if (char === '"') {
        at++
        return true
      }
      if (char < ' ') return false
      if (char !== '\\') at++
      else if (text[at + 1] === 'u' && HEX4.test(text.slice(at + 2, at + 6))) at += 6
      else if (ESCAPED.has(text[at + 1] ?? '')) at += 2
      else return false
    }
    return false
  }
  for (;;) {
    skipSpace()
    const char = text[at]
    const wasEmpty = empty
    empty = false
    if (want === 'value') {
      if (char === ']' && wasEmpty) {
        open.pop()
        at++
        want = 'next'
      } else if (char === '{' || char === '[') {
        open.push(char)
        at++
        want = char === '{' ? 'key' : 'value'
        empty = true
      } else if (char === '"') {
        if (!readString()) return at
        want = 'next'
      } else {
        const word = ['true', 'false', 'null'].find((literal) => text.startsWith(literal, at))
        NUMBER.lastIndex = at
        if (word) at += word.length
        else if (NUMBER.test(text)) at = NUMBER.lastIndex
        else return at
        want = 'next'
      }
    } else if (want === 'key') {
      if (char === '}' && wasEmpty) {
        open.pop()
        at++
        want = 'next'
        continue
      }
      if (char !== '"' || !readString()) return at
      skipSpace()
      if (text[at] !== ':') return at
      at++
      want = 'value'
    } else {
      const container = open.at(-1)
      if (container === undefined) return at < text.length ? at : undefined
      if (char === ',') {
        at++
        want = container === '{' ? 'key' : 'value'
      } else if (char === (container === '{' ? '}' : ']')) {
        open.pop()
        at++
      } else return at
    }
  }
}

/** A key an object of the JSON text gives twice: its dotted path (array items by index) and where each one starts. */
export interface DuplicateKey {
  path: string
  first: TextPosition
  second: TextPosition
}

/**
 * The first key given twice in one object of `text`, which must be valid JSON (JSON.parse keeps the last one
 * without a word). One pass with an explicit stack, like syntaxErrorAt.
 */
export function duplicateKeyIn(text: string): DuplicateKey | undefined {
  /** An open object (with the offsets of its keys so far and the one being read) or an array (with the item's index). */
  type Open = { keys: Map<string, number>; key: string } | { index: number }
  const open: Open[] = []
  let wantKey = false
  for (let at = 0; at < text.length; at++) {
    const char = text[at]
    if (char === '"') {
      const start = at
      for (at++; text[at] !== '"'; at++) if (text[at] === '\\') at++
      const container = open.at(-1)
      if (!wantKey || container === undefined || !('keys' in container)) continue
      wantKey = false
      const key = JSON.parse(text.slice(start, at + 1)) as string
      const earlier = container.keys.get(key)
      if (earlier !== undefined) {
        const path = [...open.slice(0, -1).map((outer) => ('keys' in outer ? outer.key : String(outer.index))), key].join('.')
        return { path, first: positionOf(text, earlier), second: positionOf(text, start) }
      }
      container.keys.set(key, start)
      container.key = key
    } else if (char === '{') {
      open.push({ keys: new Map(), key: '' })
      wantKey = true
    } else if (char === '[') open.push({ index: 0 })
    else if (char === '}' || char === ']') {
      open.pop()
      wantKey = false
    } else if (char === ',') {
      const container = open.at(-1)
      if (container && 'keys' in container) wantKey = true
      else if (container) container.index++
    }
  }
  return undefined
}
