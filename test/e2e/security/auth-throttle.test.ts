import { describe, expect, test } from 'bun:test'
import { metricSample, openWs, postJson, postTask, startHttpAgent, type TestServer, TOKEN, testScope } from '../../support/helpers.ts'

/** Guessing tokens is slow: failed authentications per address in a sliding window, through the real server. */

const scope = testScope()

const heartbeat = (mls: TestServer, token: string) =>
  postJson(`${mls.url}/client/heartbeat`, { ip: '127.0.0.1', node_id: 'hb', token, region: 'us-east-1', port: 9 })

async function wsAttempt(mls: TestServer, type: 'register' | 'monitor', token: string): Promise<string> {
  const peer = await openWs(mls.wsUrl)
  scope.defer(peer.close)
  peer.send({ type, payload: type === 'monitor' ? { token } : { node_id: 'ws', token, region: 'us-east-1', port: 1 } })
  const answer = await peer.next()
  if (answer.type === 'monitor_ok' || answer.type === 'registered') return 'ok'
  return `${answer.payload.code} ${(await peer.closed).code}`
}

describe('failed authentication is throttled per address', () => {
  test('3 000 wrong tokens from one address: after 20 they get 429 with Retry-After; a valid token from it still gets 200', async () => {
    const mls = scope.server()
    const agent = await startHttpAgent(mls.url, { nodeId: 'east', region: 'us-east-1' })
    scope.defer(agent.stop)
    const answers: Array<{ status: number; retryAfter: string | null; body: string }> = []
    // In batches, so the 20 allowed failures and the throttled ones are counted under concurrent load too.
    for (let sent = 0; sent < 3000; sent += 100) {
      const batch = await Promise.all(Array.from({ length: 100 }, (_, i) => postTask(mls.url, { region: 'us-east-1', payload: 1 }, `wrong-token-${sent + i}`)))
      answers.push(...batch.map((answer) => ({ status: answer.status, retryAfter: answer.headers.get('retry-after'), body: answer.text })))
    }
    const byStatus = Map.groupBy(answers, (answer) => answer.status)
    expect([...byStatus.keys()].sort()).toEqual([401, 429])
    expect(byStatus.get(401)?.length).toBe(20)
    expect(byStatus.get(429)?.length).toBe(2980)
    for (const answer of byStatus.get(429) ?? []) {
      const seconds = Number(answer.retryAfter)
      expect(Number.isInteger(seconds) && seconds >= 1 && seconds <= 60).toBe(true)
      expect(JSON.parse(answer.body)).toEqual({
        error: `too many failed authentications from this address (auth.max_failures = 20 per 60 s); try again in ${seconds} s`,
        code: 'too_many_failures',
        retry_after: seconds,
      })
      expect(answer.body).not.toContain('wrong-token-')
    }
    // The same address with a valid token: its usual answers, at once.
    const task = await postTask(mls.url, { region: 'us-east-1', payload: 2 }, TOKEN)
    expect(task.status).toBe(200)
    expect(task.json()).toEqual({ node: 'east', echo: 2 })
    expect((await fetch(`${mls.url}/clients`, { headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(200)
    expect((await agent.heartbeat()).status).toBe(200)
    expect(await wsAttempt(mls, 'monitor', TOKEN)).toBe('ok')
    // A missing token is a failure like a wrong one.
    expect((await postTask(mls.url, { payload: 1 }, null)).status).toBe(429)
    expect(await metricSample(mls.url, 'moonlight_auth_failures_total')).toBe(3001)
    expect(await metricSample(mls.url, 'moonlight_auth_throttled_total')).toBe(2981)
  })

  test('failures over the header, the heartbeat body and WebSocket register and monitor share one count', async () => {
    const mls = scope.server({ auth: { max_failures: 4 } })
    expect((await postTask(mls.url, { payload: 1 }, 'wrong-token-1')).status).toBe(401)
    expect((await fetch(`${mls.url}/clients`)).status).toBe(401)
    expect((await heartbeat(mls, 'wrong-token-2')).status).toBe(401)
    expect(await wsAttempt(mls, 'register', 'wrong-token-3')).toBe('invalid_token 1008')
    // Four failures: every further one is throttled, wherever it comes.
    expect(await wsAttempt(mls, 'monitor', 'wrong-token-4')).toBe('too_many_failures 1008')
    expect(await wsAttempt(mls, 'register', 'wrong-token-5')).toBe('too_many_failures 1008')
    const refused = await heartbeat(mls, 'wrong-token-6')
    expect(refused.status).toBe(429)
    expect(refused.json()).toMatchObject({ code: 'too_many_failures' })
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0)
    expect((await fetch(`${mls.url}/clients`)).status).toBe(429)
    // Valid tokens are not held up, over any path.
    expect((await heartbeat(mls, TOKEN)).status).toBe(200)
    expect(await wsAttempt(mls, 'register', TOKEN)).toBe('ok')
    expect(await wsAttempt(mls, 'monitor', TOKEN)).toBe('ok')
    // A known token without the role is refused, but is no failed authentication.
    const forbidden = scope.server({ access: [{ token: 'agent-token-aaaa', roles: ['agent'] }], auth: { max_failures: 1 } })
    for (let i = 0; i < 5; i++) expect((await postTask(forbidden.url, { payload: 1 }, 'agent-token-aaaa')).status).toBe(403)
    expect(await metricSample(forbidden.url, 'moonlight_auth_failures_total')).toBe(0)
  })

  test('once Retry-After has passed, a failure is answered 401 again', async () => {
    const mls = scope.server({ auth: { max_failures: 2, window: 1 } })
    await postTask(mls.url, { payload: 1 }, 'wrong-token-1')
    await postTask(mls.url, { payload: 1 }, 'wrong-token-2')
    const throttled = await postTask(mls.url, { payload: 1 }, 'wrong-token-3')
    expect(throttled.status).toBe(429)
    expect(throttled.headers.get('retry-after')).toBe('1')
    await Bun.sleep(1000)
    expect((await postTask(mls.url, { payload: 1 }, 'wrong-token-4')).status).toBe(401)
  })
})
