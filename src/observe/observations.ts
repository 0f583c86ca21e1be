import type { TaskLatency } from '../wire/monitor.ts'
import { DURATION_BUCKETS_S, Histogram } from './histogram.ts'
import { type RegionKind, RegionLabels } from './region-labels.ts'
import type { TaskRecord } from './task-stats.ts'

/**
 * What /metrics counts beyond the registry and the task totals: how long tasks and attempts take
 * (histograms), retries, ejections and bad messages. Fed by the server's wiring; no I/O.
 */
export class Observations {
  /** Per task, all attempts included: `moonlight_task_duration_seconds{region,outcome}`. */
  readonly taskDuration = new Histogram(DURATION_BUCKETS_S)
  /** Every task in one series: the dashboard's p50/p95/p99 (not rendered in /metrics, where the labelled one sums to it). */
  readonly anyTask = new Histogram(DURATION_BUCKETS_S)
  /** Per attempt, by the client's protocol: `moonlight_attempt_duration_seconds{protocol}`. */
  readonly attemptDuration = new Histogram(DURATION_BUCKETS_S)
  /** Attempts beyond each task's first. */
  retries = 0
  ejections = 0
  /** WebSocket messages refused, by error code (invalid_json, invalid_message, too_deep, binary_not_supported, internal). */
  readonly badMessages = new Map<string, number>()
  /**
   * The task histogram's label text per region label and outcome, made once rather than per task: as
   * many as its series. Keyed by the label, which is the region itself for every region with a series
   * of its own, so a task of one of those finds its labels in one lookup.
   */
  private readonly taskLabels = new Map<string, Partial<Record<TaskRecord['outcome'], string>>>()
  private readonly regionLabels: RegionLabels

  constructor(
    /**
     * What a task's region is to /metrics: callers may name any region, and a series per made-up
     * name would grow /metrics and memory without end (src/observe/region-labels.ts). The server's:
     * named by the hierarchy, held by a client now, or neither.
     */
    regionKind: (region: string) => RegionKind = () => 'named',
  ) {
    this.regionLabels = new RegionLabels(regionKind)
  }

  onTask(record: TaskRecord): void {
    // Region names are validated names (no quotes or backslashes), safe inside a label as they are.
    const seconds = (record.durationMs ?? record.latency_ms) / 1000
    let label = record.region
    let labels = this.taskLabels.get(label)
    if (labels === undefined) {
      label = this.regionLabels.label(record.region)
      labels = this.taskLabels.get(label)
      if (labels === undefined) {
        labels = {}
        this.taskLabels.set(label, labels)
      }
    }
    let text = labels[record.outcome]
    if (text === undefined) {
      text = `region="${label}",outcome="${record.outcome}"`
      labels[record.outcome] = text
    }
    this.taskDuration.observe(text, seconds)
    this.anyTask.observe('', seconds)
    if (record.mode === 'single' && record.attempts > 1) this.retries += record.attempts - 1
  }

  /**
   * p50/p95/p99 of every task since the start, in ms at bucket resolution (the bucket's upper bound,
   * as Prometheus's histogram_quantile would bound it); null past the last bucket (60 s). Undefined before the first task.
   */
  taskLatency(): TaskLatency | undefined {
    const at = (quantile: number) => {
      const seconds = this.anyTask.quantile('', quantile)
      return seconds === undefined || seconds === Number.POSITIVE_INFINITY ? null : Math.round(seconds * 1e6) / 1e3
    }
    if (this.anyTask.quantile('', 0.5) === undefined) return undefined
    return { p50_ms: at(0.5), p95_ms: at(0.95), p99_ms: at(0.99) }
  }

  onAttempt(protocol: 'http' | 'ws', ms: number): void {
    this.attemptDuration.observe(protocol === 'http' ? 'protocol="http"' : 'protocol="ws"', ms / 1000)
  }

  onEjected(): void {
    this.ejections++
  }

  onBadMessage(code: string): void {
    this.badMessages.set(code, (this.badMessages.get(code) ?? 0) + 1)
  }
}
