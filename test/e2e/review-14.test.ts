/**
 * Review of issue 14: defects found in stored tasks, one server (memory store). Each test fails today.
 */
import { describe, expect, test } from 'bun:test'
import { startHttpAgent, TOKEN, testScope, waitFor } from '../helpers.ts'

const { defer, server } = testScope()
const HEADERS = { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` }

async function submit(url: string, body: unknown, headers: Record<string, string> = {}) {
  const response = await fetch(`${url}/task/request`, { method: 'POST', headers: { ...HEADERS, ...headers }, body: JSON.stringify(body) })
  return { response, text: await response.text() }
}

describe('review 14: idempotency keys', () => {
  test('a keyed sync task refused 503 no_client (it never ran) can be retried with its key once an agent is there', async () => {
    const mls = server()
    const body = { region: 'us-east-1', payload: { charge: 1 } }
    const first = await submit(mls.url, body, { 'idempotency-key': 'retry-me' })
    // The server tells the caller to come back: nothing ran, no agent was there.
    expect(first.response.status).toBe(503)
    const agent = await startHttpAgent(mls.url, { nodeId: 'late', region: 'us-east-1' })
    defer(agent.stop)
    await waitFor(async () => (await fetch(`${mls.url}/clients`, { headers: HEADERS }).then((r) => r.text())).includes('"late"'), 'the agent registered')
    const retry = await submit(mls.url, body, { 'idempotency-key': 'retry-me' })
    // Today: the stored 503 is replayed (Idempotent-Replayed: true) for idempotency_ttl (24 h), and the task never runs.
    expect([retry.response.status, retry.response.headers.get('idempotent-replayed'), agent.received]).toEqual([200, null, [{ charge: 1 }]])
  })
})
