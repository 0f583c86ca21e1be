/** Suggestions for a mistyped name (a config key, say): the known name within a couple of edits of it. */

/** The known name nearest to `name` if it is a likely typo of it (a swap, a dropped or added letter or two), else undefined. */
export function nearestName(name: string, known: Iterable<string>): string | undefined {
  // Two edits for a long name, one for a short: "ws.pth" is "path", but "ip" is not "id".
  const allowed = name.length > 5 ? 2 : 1
  let best: string | undefined
  let bestDistance = allowed + 1
  for (const candidate of known) {
    const distance = editDistance(name.toLowerCase(), candidate.toLowerCase())
    if (distance < bestDistance) {
      best = candidate
      bestDistance = distance
    }
  }
  return best
}

/** Optimal string alignment distance: insertions, deletions, substitutions and swaps of neighbours each cost 1. */
function editDistance(a: string, b: string): number {
  let beforePrevious: number[] = []
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const current = [i]
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      let value = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + cost)
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) value = Math.min(value, beforePrevious[j - 2]! + 1)
      current.push(value)
    }
    beforePrevious = previous
    previous = current
  }
  return previous[b.length]!
}
