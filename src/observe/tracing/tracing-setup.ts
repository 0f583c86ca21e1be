import type { Clock } from '../../clock.ts'
import type { Config } from '../../config/config.ts'
import { VERSION } from '../../version.ts'
import type { Log } from '../logger.ts'
import { type ExportSettings, OtlpExporter } from './otlp-exporter.ts'
import { Tracer } from './tracer.ts'

export interface Tracing {
  tracer: Tracer
  exporter: OtlpExporter
}

/** The tracer and its exporter, both reading `tracing` from the config in force: a reload turns it on, off or elsewhere. */
export function setUpTracing(config: () => Config, clock: Clock, log: Log, instanceId: () => string | undefined): Tracing {
  const exportSettings = (): ExportSettings | undefined => {
    const tracing = config().tracing
    if (tracing === undefined) return undefined
    const instance = instanceId()
    return {
      endpoint: tracing.endpoint,
      headers: tracing.headers,
      flushIntervalMs: tracing.flush_interval * 1000,
      batchSpans: tracing.batch_spans,
      maxQueuedSpans: tracing.max_queued_spans,
      timeoutMs: tracing.timeout * 1000,
      resource: { serviceName: tracing.service_name, serviceVersion: VERSION, ...(instance === undefined ? {} : { instanceId: instance }) },
    }
  }
  const exporter = new OtlpExporter(exportSettings, clock, (message) => log(message, { level: 'warn' }))
  const tracer = new Tracer(
    () => config().tracing,
    clock,
    (spans) => exporter.add(spans),
  )
  return { tracer, exporter }
}
