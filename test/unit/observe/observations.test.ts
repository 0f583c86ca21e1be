import { describe, expect, test } from 'bun:test'
import { Observations } from '../../../src/observe/observations.ts'
import type { RegionKind } from '../../../src/observe/region-labels.ts'
import { MAX_UNNAMED_REGION_SERIES, OTHER_REGION_LABEL } from '../../../src/observe/region-labels.ts'
import type { TaskRecord } from '../../../src/observe/task-stats.ts'

function task(region: string): TaskRecord {
  return { task_id: 't', region, mode: 'single', node_id: 'n', status: 200, outcome: 'ok', attempts: 1, latency_ms: 1, finishedAtMs: 0 }
}

/** The region labels of the task histogram's series. */
function regionLabels(observations: Observations): Set<string> {
  const labels = new Set<string>()
  for (const line of observations.taskDuration.lines('h')) {
    const region = /region="([^"]*)"/.exec(line)?.[1]
    if (region !== undefined) labels.add(region)
  }
  return labels
}

describe('observations', () => {
  test('regions only clients name get series up to MAX_UNNAMED_REGION_SERIES, then share (other); named ones always get theirs', () => {
    const named = new Set(['usa', 'europe'])
    const observations = new Observations((region): RegionKind => (named.has(region) ? 'named' : region.startsWith('held-') ? 'held' : 'other'))
    for (let i = 0; i < 50_000; i++) observations.onTask(task(`held-${i}`))
    observations.onTask(task('usa'))
    observations.onTask(task('made-up'))
    const labels = regionLabels(observations)
    expect(labels.size).toBe(MAX_UNNAMED_REGION_SERIES + 2)
    expect(labels.has('held-0')).toBe(true)
    expect(labels.has(`held-${MAX_UNNAMED_REGION_SERIES}`)).toBe(false)
    expect(labels.has('usa')).toBe(true)
    expect(labels.has(OTHER_REGION_LABEL)).toBe(true)
  })

  test('a region that has a series keeps it once its clients have left', () => {
    let kind: RegionKind = 'held'
    const observations = new Observations(() => kind)
    observations.onTask(task('moved-away'))
    kind = 'other'
    observations.onTask(task('moved-away'))
    expect(observations.taskDuration.quantile('region="moved-away",outcome="ok"', 1)).toBeDefined()
    expect(regionLabels(observations)).toEqual(new Set(['moved-away']))
  })
})
