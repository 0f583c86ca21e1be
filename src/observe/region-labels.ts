/** How a region stands for /metrics: named by the hierarchy, where a client is registered now, or neither. */
export type RegionKind = 'named' | 'held' | 'other'

/** The label of the regions past the bound; no region name has parentheses. */
export const OTHER_REGION_LABEL = '(other)'

/**
 * Regions the hierarchy does not name that get series of their own, at most: agents may register in
 * any region and move on, and each region left behind would keep its series for the server's life.
 */
export const MAX_UNNAMED_REGION_SERIES = 1000

/**
 * The region label of a /metrics series, from a set that cannot grow without end: a region the
 * hierarchy names gets its own, as does one a client is in, up to MAX_UNNAMED_REGION_SERIES of
 * those; any other shares OTHER_REGION_LABEL. A region once labelled keeps its label, so a series
 * never moves to (other) and back. Used by every series labelled by region or pool.
 */
export class RegionLabels {
  private readonly labelled = new Set<string>()
  private unnamed = 0

  constructor(private readonly kindOf: (region: string) => RegionKind) {}

  label(region: string): string {
    if (this.labelled.has(region)) return region
    const kind = this.kindOf(region)
    if (kind === 'other' || (kind === 'held' && this.unnamed >= MAX_UNNAMED_REGION_SERIES)) return OTHER_REGION_LABEL
    if (kind === 'held') this.unnamed++
    this.labelled.add(region)
    return region
  }
}
