/**
 * A Prometheus histogram: cumulative counts per upper bound, a sum and a count, per label set. Pure
 * (observations come in as numbers); rendered in the text format by src/http/metrics.ts.
 */
export class Histogram {
  private readonly series = new Map<string, { counts: number[]; sum: number; count: number }>()

  constructor(
    /** Upper bounds in seconds, ascending; +Inf is implied. */
    readonly buckets: readonly number[],
  ) {}

  /** `labels` is the rendered label text without braces (`region="x",outcome="ok"`), as the caller builds it once. */
  observe(labels: string, seconds: number): void {
    let entry = this.series.get(labels)
    if (!entry) {
      entry = { counts: new Array(this.buckets.length).fill(0), sum: 0, count: 0 }
      this.series.set(labels, entry)
    }
    // Per bucket, not cumulative: made cumulative when rendered, so an observation costs one increment.
    // A plain loop: this runs twice per task, and findIndex called a closure per bucket.
    const { buckets } = this
    for (let index = 0; index < buckets.length; index++) {
      if (seconds <= buckets[index]!) {
        entry.counts[index]!++
        break
      }
    }
    entry.sum += seconds
    entry.count++
  }

  /** The text-format sample lines of `name`: `_bucket` with `le` (cumulative, +Inf last), `_sum`, `_count`. */
  lines(name: string): string[] {
    const lines: string[] = []
    for (const [labels, { counts, sum, count }] of this.series) {
      const prefix = labels === '' ? '' : `${labels},`
      let cumulative = 0
      this.buckets.forEach((bound, index) => {
        cumulative += counts[index]!
        lines.push(`${name}_bucket{${prefix}le="${bound}"} ${cumulative}`)
      })
      lines.push(`${name}_bucket{${prefix}le="+Inf"} ${count}`)
      const braces = labels === '' ? '' : `{${labels}}`
      lines.push(`${name}_sum${braces} ${sum}`, `${name}_count${braces} ${count}`)
    }
    return lines
  }

  /** The value below which `quantile` of the observations of `labels` fall, at bucket resolution (the dashboard's p50/p95/p99). */
  quantile(labels: string, quantile: number): number | undefined {
    const entry = this.series.get(labels)
    if (!entry || entry.count === 0) return undefined
    const rank = quantile * entry.count
    let cumulative = 0
    for (let index = 0; index < this.buckets.length; index++) {
      cumulative += entry.counts[index]!
      if (cumulative >= rank) return this.buckets[index]
    }
    return Number.POSITIVE_INFINITY
  }
}

/** 1 ms to 60 s, about three buckets per decade: fine enough for a p99, few enough to scrape. */
export const DURATION_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60] as const
