/**
 * docs/security.md names the bound of everything the server keeps that callers, agents or dashboards
 * can add to, and the figures it gives are the code's.
 */
import { describe, expect, test } from 'bun:test'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { MAX_CONFLICTS } from '../../../src/fleet/refused-claims.ts'
import { MAX_KEPT } from '../../../src/fleet/registry.ts'
import { MAX_UNNAMED_REGION_SERIES } from '../../../src/observe/region-labels.ts'
import { CLIENTS_KEPT, RECENT_KEPT, TASKS_PER_CLIENT } from '../../../src/observe/task-stats.ts'
import { MAX_TRACKED_ADDRESSES } from '../../../src/security/auth-failures.ts'
import { POOLS_KEPT_IDLE_WITHIN } from '../../../src/tasks/retry-budget.ts'
import { ROOT } from '../../support/helpers.ts'

const HEADING = '## What the server keeps of what others send'

function section(): string {
  const doc = readFileSync(join(ROOT, 'docs/security.md'), 'utf8')
  const start = doc.indexOf(`\n${HEADING}\n`)
  if (start === -1) return ''
  const end = doc.indexOf('\n## ', start + 1)
  return doc.slice(start, end === -1 ? undefined : end)
}

/** A figure as the docs write it: 10 000. */
function figure(value: number): string {
  return value.toLocaleString('en').replaceAll(',', ' ')
}

describe('docs/security.md', () => {
  test('names each bound on what others can make the server keep, with the figure the code uses', () => {
    const rows = section()
      .split('\n')
      .filter((line) => line.startsWith('| '))
    const row = (first: string) => rows.find((line) => line.toLowerCase().startsWith(`| ${first}`)) ?? `(no row "${first}")`
    expect(row('failed authentications')).toContain(`${figure(MAX_TRACKED_ADDRESSES)} addresses`)
    expect(row("a node's drain or ejection")).toContain(`${figure(MAX_KEPT)} nodes`)
    expect(row('refused claims')).toContain(`${figure(MAX_CONFLICTS)} node ids`)
    expect(row("each client's recent tasks")).toContain(`${figure(CLIENTS_KEPT)} clients × ${figure(TASKS_PER_CLIENT)} tasks`)
    expect(row('recent tasks')).toContain(`${figure(RECENT_KEPT)} tasks`)
    expect(row('series of')).toContain(`${figure(MAX_UNNAMED_REGION_SERIES)} others`)
    expect(row('the retry budget')).toContain(`fewer than ${figure(POOLS_KEPT_IDLE_WITHIN)} pools`)
    for (const key of [
      'max_clients',
      'ws.max_connections',
      'ws.max_unregistered',
      'tasks.max_results',
      'tasks.max_bytes',
      'queue.max',
      'tracing.max_queued_spans',
    ]) {
      expect(section()).toContain(`\`${key}\``)
    }
  })
})
