/**
 * Every metric the docs name is one a real server's `GET /metrics` serves, with the labels and label
 * values the docs give it: an instance of a cluster (a real redis-server), so the cluster's metrics are
 * there too, after a task, a bad WebSocket message and an HTTP agent's call, so the labelled samples are.
 * A label of a metric with no sample yet (retries refused per pool) is looked up where src/http/metrics.ts writes that metric,
 * a label value no sample has yet (a client's state "failing") among the string literals of src/.
 */
import { describe, expect, test } from 'bun:test'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { clusterScope } from '../../support/cluster.ts'
import { PAGES, pageText } from '../../support/docs.ts'
import { openWs, postTask, ROOT, startHttpAgent, testScope, waitFor } from '../../support/helpers.ts'

const METRICS_SOURCE = readFileSync(join(ROOT, 'src/http/metrics.ts'), 'utf8')

/** What src/http/metrics.ts writes for one metric: from its name to the next metric's name ('' if it writes none). */
function sourceOf(metric: string): string {
  const start = METRICS_SOURCE.indexOf(`'${metric}'`)
  if (start === -1) return ''
  const next = METRICS_SOURCE.slice(start + 1).search(/'(?:moonlight|process)_[a-z_]+'/)
  return METRICS_SOURCE.slice(start, next === -1 ? undefined : start + 1 + next)
}
/** Every string literal of src/ ('failing', 'open'…): where a label value no sample shows yet must come from. */
const SOURCE_WORDS = new Set(
  readdirSync(join(ROOT, 'src'), { recursive: true, encoding: 'utf8' })
    .filter((path) => path.endsWith('.ts'))
    .flatMap((path) => [...readFileSync(join(ROOT, 'src', path), 'utf8').matchAll(/'([a-z_]+)'/g)].map((match) => match[1]!)),
)

interface Mention {
  page: string
  name: string
  /** Label names, and the values the page lists for each (`state="open|busy"`). */
  labels: Map<string, string[]>
}

/** Each `moonlight_…` or `process_…` metric a page names, with the labels written after it. */
function mentions(): Mention[] {
  const found: Mention[] = []
  for (const page of PAGES) {
    for (const match of pageText(page).matchAll(/(?<!["\w])((?:moonlight|process)_[a-z_]*[a-z])(\{[^}]*\})?/g)) {
      const labels = new Map<string, string[]>()
      for (const part of (match[2] ?? '').slice(1, -1).split(',').filter(Boolean)) {
        const [name, values] = part.split('=')
        labels.set(name!.trim(), values === undefined ? [] : values.replace(/^"|"$/g, '').split('|'))
      }
      found.push({ page, name: match[1]!, labels })
    }
  }
  return found
}

/** The metrics a /metrics text declares (# TYPE), and each one's samples' labels. */
function parseMetrics(text: string): { types: Map<string, string>; samples: Map<string, Array<Record<string, string>>> } {
  const types = new Map<string, string>()
  const samples = new Map<string, Array<Record<string, string>>>()
  for (const line of text.split('\n')) {
    const typed = /^# TYPE (\S+) (\S+)$/.exec(line)
    if (typed) types.set(typed[1]!, typed[2]!)
    const sample = /^([a-z_]+)(?:\{([^}]*)\})? \S+$/.exec(line)
    if (!sample) continue
    const name = sample[1]!.replace(/_(?:bucket|sum|count)$/, (suffix) => (types.get(sample[1]!.slice(0, -suffix.length)) === 'histogram' ? '' : suffix))
    const labels = Object.fromEntries([...(sample[2] ?? '').matchAll(/([a-z_]+)="([^"]*)"/g)].map((each) => [each[1]!, each[2]!]))
    samples.set(name, [...(samples.get(name) ?? []), labels])
  }
  return { types, samples }
}

const { defer } = testScope()
const cluster = clusterScope(defer)

describe('the metrics the docs name', () => {
  test('are served by /metrics (a cluster instance), with the labels and label values the docs give them', async () => {
    const found = mentions()
    // operations.md alone names some thirty.
    expect(new Set(found.map((each) => each.name)).size).toBeGreaterThan(30)

    const redis = await cluster.redisServer()
    const instance = await cluster.instance(redis.url, 'metrics-a')
    // A task answered by an HTTP agent (its pool, the task and attempt histograms), and a bad WebSocket message.
    const agent = await startHttpAgent(instance.url, { nodeId: 'metrics-http', region: 'us-east-1' })
    defer(agent.stop)
    expect((await postTask(instance.url, { region: 'us-east-1', payload: { n: 1 } })).status).toBe(200)
    const peer = await openWs(instance.wsUrl)
    defer(peer.close)
    peer.socket.send('{not json')
    let text = ''
    await waitFor(
      async () => {
        text = await (await fetch(`${instance.url}/metrics`)).text()
        return text.includes('moonlight_websocket_bad_messages_total{code="invalid_json"}')
      },
      'the bad message counted',
      5000,
    )
    const { types, samples } = parseMetrics(text)

    const problems: string[] = []
    for (const { page, name, labels } of found) {
      const base = types.has(name) ? name : name.replace(/_(?:bucket|sum|count)$/, '')
      if (!types.has(base)) {
        problems.push(`${page}: ${name} is not in /metrics`)
        continue
      }
      const seen = samples.get(base) ?? []
      for (const [label, values] of labels) {
        if (seen.length > 0 && seen.every((sample) => Object.keys(sample).length > 0)) {
          if (!seen.some((sample) => label in sample)) problems.push(`${page}: ${name} has no label ${label}`)
          // A value no sample has now (a client's state "failing") must be one the server can write.
          for (const value of values)
            if (!seen.some((sample) => sample[label] === value) && !SOURCE_WORDS.has(value))
              problems.push(`${page}: ${name} has no sample with ${label}="${value}", and no source file names "${value}"`)
        } else if (!sourceOf(base).includes(`{${label}="`))
          problems.push(`${page}: ${name}{${label}} has no sample, and src/http/metrics.ts writes no such label for it`)
      }
    }
    expect(problems).toEqual([])
  }, 60_000)
})
