/**
 * With require_task_token false a task needs no token, but a token sent with one is still looked at
 * (a monitor token gets the details of agents' failures). A wrong token sent there is a failed
 * authentication like any other (docs/security.md: "Every failed authentication (a missing or wrong
 * token, in a header, …) is counted"): otherwise the difference in the answer is an unthrottled
 * oracle telling a guesser when a guess holds the monitor role.
 */
import { describe, expect, test } from 'bun:test'
import { deadPort, postJson, postTask, TOKEN, testScope } from '../../support/helpers.ts'

const { server } = testScope()

describe('require_task_token false: a wrong token in the header', () => {
  test('is counted as a failed authentication, and throttled past auth.max_failures before the real token is recognised', async () => {
    const mls = server({ require_task_token: false, retry_count: 0, auth: { max_failures: 2 } })
    // An agent that cannot be reached: its failure's details are what tells a monitor token from a wrong one.
    const registered = await postJson(`${mls.url}/client/heartbeat`, { ip: '127.0.0.1', node_id: 'dead', token: TOKEN, region: 'us-east-1', port: deadPort() })
    expect(registered.status).toBe(200)
    const statuses: number[] = []
    for (const guess of ['guess-token-0001', 'guess-token-0002', 'guess-token-0003', 'guess-token-0004'])
      statuses.push((await postTask(mls.url, { region: 'us-east-1', payload: 1 }, guess)).status)
    const metrics = await (await fetch(`${mls.url}/metrics`)).text()
    const failures = Number(/^moonlight_auth_failures_total (\d+)/m.exec(metrics)?.[1])
    expect(failures).toBe(4)
    // The first two guesses are failures within the limit; the rest are refused like any other guesses past it.
    expect(statuses).toEqual([502, 502, 429, 429])
  })
})
