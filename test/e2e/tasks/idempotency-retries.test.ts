/**
 * Idempotency keys of tasks that never ran: a retry with the key runs them (one server, the memory store).
 */
import { describe, expect, test } from 'bun:test'
import { startHttpAgent, testScope, waitFor } from '../../support/helpers.ts'
import { submitTask, TASK_HEADERS } from '../../support/task-calls.ts'

const { defer, server } = testScope()
const HEADERS = TASK_HEADERS

const submit = submitTask

describe('idempotency keys of tasks that never ran', () => {
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
    // Not a replay of the 503 for idempotency_ttl (24 h): the task runs now.
    expect([retry.response.status, retry.response.headers.get('idempotent-replayed'), agent.received]).toEqual([200, null, [{ charge: 1 }]])
  })
})
