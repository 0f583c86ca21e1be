/** What callers learn of agents' failures: details for operators (the monitor role), the node and a generic reason for everyone else. */
import { describe, expect, test } from 'bun:test'
import { deadPort, postJson, postTask, startHttpAgent, TOKEN, testScope } from '../../support/helpers.ts'

const { defer, server } = testScope()
const SUBMIT_ONLY = 'submit-only-token-1'
const OPERATOR = 'operator-token-0001'

function secured(extra: Record<string, unknown> = {}) {
  return server({
    retry_count: 1,
    access: [
      { token: SUBMIT_ONLY, roles: ['submit'] },
      { token: OPERATOR, roles: ['submit', 'monitor'] },
    ],
    ...extra,
  } as never)
}

describe('failure details go only to callers with the monitor role', () => {
  test('an unreachable agent: its address and port reach an operator, a submitter sees the node and a generic reason', async () => {
    const mls = secured()
    const port = deadPort()
    expect((await postJson(`${mls.url}/client/heartbeat`, { ip: '127.0.0.1', node_id: 'hidden', token: TOKEN, region: 'usa', port })).status).toBe(200)
    const submitter = await postTask(mls.url, { region: 'usa', payload: 1 }, SUBMIT_ONLY)
    expect(submitter.status).toBe(502)
    expect(submitter.json().attempts[0]).toEqual({ node_id: 'hidden', kind: 'unreachable', reason: 'the client could not be reached' })
    expect(submitter.text).not.toContain('127.0.0.1')
    expect(submitter.text).not.toContain(String(port))
    const operator = await postTask(mls.url, { region: 'usa', payload: 1 }, OPERATOR)
    expect(operator.json().attempts[0].reason).toContain(`127.0.0.1:${port}`)
  })

  test("an agent's 5xx body (its own account of the failure) is an operator's to read", async () => {
    const mls = secured()
    const agent = await startHttpAgent(mls.url, { nodeId: 'leaky', region: 'usa', work: () => new Response('db at 10.1.2.3:5432 refused', { status: 500 }) })
    defer(agent.stop)
    const submitter = await postTask(mls.url, { region: 'usa', payload: 1 }, SUBMIT_ONLY)
    expect(submitter.json().attempts[0]).toEqual({ node_id: 'leaky', kind: 'status', reason: 'answered 500', status: 500 })
    const operator = await postTask(mls.url, { region: 'usa', payload: 1 }, OPERATOR)
    expect(operator.json().attempts[0]).toMatchObject({ kind: 'status', status: 500, body: 'db at 10.1.2.3:5432 refused' })
  })

  test('a broadcast part that answered 5xx keeps its body from a submitter, not from an operator', async () => {
    const mls = secured()
    const agent = await startHttpAgent(mls.url, { nodeId: 'leaky', region: 'usa', work: () => new Response('db at 10.1.2.3:5432 refused', { status: 500 }) })
    defer(agent.stop)
    const submitter = await postTask(mls.url, { region: 'usa', payload: 1, mode: 'broadcast' }, SUBMIT_ONLY)
    expect(submitter.json().results).toEqual([{ node_id: 'leaky', protocol: 'http', status: 500 }])
    const operator = await postTask(mls.url, { region: 'usa', payload: 1, mode: 'broadcast' }, OPERATOR)
    expect(operator.json().results[0]).toMatchObject({ status: 500, response: 'db at 10.1.2.3:5432 refused' })
  })

  test('with require_task_token off, an anonymous caller gets the generic reasons; a broadcast too', async () => {
    const mls = secured({ require_task_token: false })
    const port = deadPort()
    await postJson(`${mls.url}/client/heartbeat`, { ip: '127.0.0.1', node_id: 'hidden', token: TOKEN, region: 'usa', port })
    const anonymous = await postTask(mls.url, { region: 'usa', payload: 1 }, null)
    expect(anonymous.status).toBe(502)
    expect(anonymous.text).not.toContain(String(port))
    const broadcast = await postTask(mls.url, { region: 'usa', payload: 1, mode: 'broadcast' }, null)
    expect(broadcast.json().results[0]).toMatchObject({ node_id: 'hidden', kind: 'unreachable', error: 'the client could not be reached' })
    expect(broadcast.text).not.toContain(String(port))
    // An operator's token still brings the details, even where none is needed.
    expect((await postTask(mls.url, { region: 'usa', payload: 1 }, OPERATOR)).text).toContain(String(port))
  })
})
