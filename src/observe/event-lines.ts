import type { RegistryEvent } from '../fleet/registry.ts'
import type { LogFields } from './logger.ts'
import type { TaskRecord } from './task-stats.ts'

/** log.access: one line per task, with what an operator greps for; never its payload or the caller's token. */
export function accessLine(record: TaskRecord): string {
  // A broadcast has no one node: how many of the clients it reached answered.
  const to = record.node_id ?? (record.answered === undefined || record.attempts === 0 ? 'no client' : `${record.answered} of ${record.attempts} answered`)
  return `[mls] task ${record.task_id} ${record.mode} ${record.region || 'global'} → ${to}: ${record.status} in ${durationOf(record)} ms, ${record.attempts} attempt${record.attempts === 1 ? '' : 's'}${record.trace_id === undefined ? '' : `, trace ${record.trace_id}`}`
}

/** ms to a tenth: whole wall-clock ms would call every fast task 0. */
function durationOf(record: TaskRecord): number {
  return Math.round((record.durationMs ?? record.latency_ms) * 10) / 10
}

export function accessFields(record: TaskRecord): LogFields {
  return {
    task_id: record.task_id,
    mode: record.mode,
    region: record.region,
    node_id: record.node_id,
    status: record.status,
    outcome: record.outcome,
    attempts: record.attempts,
    ...(record.answered === undefined ? {} : { answered: record.answered }),
    duration_ms: durationOf(record),
    ...(record.trace_id === undefined ? {} : { trace_id: record.trace_id }),
  }
}

/** One log line per membership or health change: what an operator greps for when a region misbehaves. */
export function describeEvent(event: RegistryEvent): string {
  const { client } = event
  const who = `${client.protocol} client ${client.nodeId} (${client.region})`
  switch (event.type) {
    case 'joined':
      return `[mls] ${who} joined at ${client.protocol === 'http' ? `${client.ip}:${client.port}` : client.ip}, weight ${client.weight}`
    case 'updated':
      return `[mls] ${who} now has weight ${client.weight}${client.operatorDrained ? ' (drained by an operator)' : client.weight === 0 ? ' (draining)' : ''}`
    case 'left':
      return `[mls] ${who} left: ${event.reason}`
    case 'state':
      if (client.state === 'ejected')
        return `[mls] ${who} ejected after ${client.consecutiveFailures} consecutive failures, until ${new Date(client.ejectedUntil).toISOString()}`
      if (client.state === 'failing')
        return `[mls] ${who} is failing (${client.consecutiveFailures} consecutive failures): kept in service, as ejecting it would leave its pool with too few clients (health.max_ejected_percent)`
      return `[mls] ${who} is ${client.state === 'probation' ? 'on probation: the next task decides' : 'healthy again'}`
  }
}
