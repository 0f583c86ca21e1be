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
  if (offset === undefined) return undefined
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
