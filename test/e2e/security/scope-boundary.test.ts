/**
 * A token limited to regions is a boundary: none of its tasks — plain, keyed, async, with an
 * Idempotency-Key — is sent to an agent outside its regions, whatever fallback says (issue 21).
 */
import { describe, expect, test } from 'bun:test'
import { postTask, startHttpAgent, TOKEN, testScope } from '../../support/helpers.ts'

const EAST_SUBMIT = 'east-submit-scope-1'
const { defer, server } = testScope()

/** us-east-1's only agent drained, an eu-west-1 agent ready under the shared root: the fallback would climb to it. */
async function drainedEast() {
  const mls = server({ access: [{ token: EAST_SUBMIT, roles: ['submit'], regions: ['us-east-1'] }] })
  const east = await startHttpAgent(mls.url, { nodeId: 'east', region: 'us-east-1' })
  defer(east.stop)
  const eu = await startHttpAgent(mls.url, { nodeId: 'eu', region: 'eu-west-1' })
  defer(eu.stop)
  const drained = await fetch(`${mls.url}/clients/east/drain`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } })
  expect(drained.status).toBe(200)
  return { mls, east, eu }
}

const BOUNDARY_503 = {
  code: 'no_client',
  region: 'us-east-1',
  boundary: 'us-east-1',
  error:
    'no healthy client in region "us-east-1" or under it; this token is limited to regions, and its tasks are never sent outside them (boundary "us-east-1")',
}

async function submit(url: string, body: unknown, headers: Record<string, string> = {}) {
  const response = await fetch(`${url}/task/request`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${EAST_SUBMIT}`, ...headers },
    body: JSON.stringify(body),
  })
  return { status: response.status, body: (await response.json()) as Record<string, any> }
}

describe("a token's regions are a boundary its tasks never cross", () => {
  test('plain and keyed tasks: 503 no_client naming the boundary; the eu-west-1 agent receives nothing', async () => {
    const { mls, east, eu } = await drainedEast()
    for (const body of [
      { region: 'us-east-1', payload: 1 },
      { region: 'us-east-1', payload: 2, key: 'user-7' },
      { region: 'us-east-1', payload: 3, fallback: 'parent' },
    ]) {
      const answer = await submit(mls.url, body)
      expect({ body, status: answer.status, answer: answer.body }).toEqual({ body, status: 503, answer: BOUNDARY_503 })
    }
    expect(eu.received).toEqual([])
    expect(east.received).toEqual([])
    // An unlimited token's task still climbs, as before.
    expect((await postTask(mls.url, { region: 'us-east-1', payload: 4 })).headers.get('x-moonlight-node')).toBe('eu')
  })

  test('an async task ends 503 no_client naming the boundary', async () => {
    const { mls, eu } = await drainedEast()
    const accepted = await submit(mls.url, { region: 'us-east-1', payload: 1, mode: 'async' })
    expect(accepted.status).toBe(202)
    const result = await fetch(`${mls.url}/task/${accepted.body.task_id}/result?wait=10`, { headers: { authorization: `Bearer ${EAST_SUBMIT}` } })
    expect(result.status).toBe(503)
    expect(await result.json()).toEqual(BOUNDARY_503)
    expect(eu.received).toEqual([])
  })

  test('a task with an Idempotency-Key, and its replay, end 503 no_client naming the boundary', async () => {
    const { mls, eu } = await drainedEast()
    for (let i = 0; i < 2; i++) {
      const answer = await submit(mls.url, { region: 'us-east-1', payload: 1 }, { 'idempotency-key': 'scope-key-1' })
      expect({ i, status: answer.status, answer: answer.body }).toEqual({ i, status: 503, answer: BOUNDARY_503 })
    }
    expect(eu.received).toEqual([])
  })

  test('an agent ejected for failing payloads leaves its tasks nowhere to go, not in another region', async () => {
    const mls = server({
      access: [{ token: EAST_SUBMIT, roles: ['submit'], regions: ['us-east-1'] }],
      health: { failures_to_eject: 1, max_ejected_percent: 100 },
      retry_count: 0,
    })
    const east = await startHttpAgent(mls.url, { nodeId: 'east', region: 'us-east-1', work: () => new Response('bad payload', { status: 500 }) })
    defer(east.stop)
    const eu = await startHttpAgent(mls.url, { nodeId: 'eu', region: 'eu-west-1' })
    defer(eu.stop)
    expect((await submit(mls.url, { region: 'us-east-1', payload: 'poison' })).status).toBe(502)
    const after = await submit(mls.url, { region: 'us-east-1', payload: 'next' })
    expect({ status: after.status, answer: after.body }).toEqual({ status: 503, answer: BOUNDARY_503 })
    expect(eu.received).toEqual([])
  })
})

describe("a token's boundary holds for tasks that wait for a slot", () => {
  test('with every agent full, its task waits in its own region and is never given a slot freed outside it', async () => {
    const mls = server({ access: [{ token: EAST_SUBMIT, roles: ['submit'], regions: ['us-east-1'] }], queue: { timeout: 10 } })
    // One slot each: east busy for 1.5 s, eu busy for 0.3 s (tasks of the unlimited token), so eu's slot frees first.
    const agent = async (nodeId: string, region: string, busyMs: number) => {
      let calls = 0
      const started = await startHttpAgent(mls.url, {
        nodeId,
        region,
        work: async (payload) => {
          calls++
          if ((payload as { hold?: boolean }).hold) await Bun.sleep(busyMs)
          return Response.json({ node: nodeId, echo: payload })
        },
      })
      defer(started.stop)
      expect((await started.heartbeat({ max_in_flight: 1 })).status).toBe(200)
      return { calls: () => calls }
    }
    const east = await agent('east', 'us-east-1', 1500)
    const eu = await agent('eu', 'eu-west-1', 300)
    const holds = [postTask(mls.url, { region: 'us-east-1', payload: { hold: true } }), postTask(mls.url, { region: 'eu-west-1', payload: { hold: true } })]
    await Bun.sleep(100)
    const scoped = await submit(mls.url, { region: 'us-east-1', payload: { scoped: true } })
    await Promise.all(holds)
    expect({ status: scoped.status, node: scoped.body.node }).toEqual({ status: 200, node: 'east' })
    expect({ east: east.calls(), eu: eu.calls() }).toEqual({ east: 2, eu: 1 })
  })
})
