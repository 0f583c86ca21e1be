/**
 * Stored tasks on one server, end to end with real agents: async submit → poll → result as-is, long
 * poll, cancel (queued and running), idempotency keys (replays, concurrent arrivals, mismatched
 * bodies), owners, and the errors around them.
 */
import { describe, expect, test } from 'bun:test'
import { postTask, startCli, startHttpAgent, startWsAgent, TOKEN, testScope, waitFor } from '../../support/helpers.ts'

const { defer, server } = testScope()
const BEARER = { authorization: `Bearer ${TOKEN}` }

async function submit(url: string, body: unknown, headers: Record<string, string> = {}) {
  const response = await fetch(`${url}/task/request`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...BEARER, ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  })
  return { response, text: await response.text() }
}

async function get(url: string, path: string, headers: Record<string, string> = BEARER) {
  const response = await fetch(`${url}${path}`, { headers })
  return { response, text: await response.text() }
}

async function cancel(url: string, taskId: string, headers: Record<string, string> = BEARER) {
  const response = await fetch(`${url}/task/${taskId}`, { method: 'DELETE', headers })
  return { response, text: await response.text() }
}

/** An HTTP agent whose answers wait until `release()`; it counts each call. */
async function heldHttpAgent(url: string, nodeId: string) {
  const gates: Array<() => void> = []
  const agent = await startHttpAgent(url, {
    nodeId,
    region: 'us-east-1',
    work: async (payload) => {
      await new Promise<void>((resolve) => gates.push(resolve))
      return new Response(JSON.stringify({ done: payload }), { status: 201, headers: { 'content-type': 'application/json', 'x-agent': 'held' } })
    },
  })
  defer(() => {
    for (const open of gates.splice(0)) open()
    agent.stop()
  })
  const release = () => {
    for (const open of gates.splice(0)) open()
  }
  return { agent, release, waiting: () => gates.length }
}

describe('async tasks', () => {
  test('submit → 202 with Location; poll → running then done; the result is the agent answer as-is', async () => {
    const mls = server()
    const { agent, release, waiting } = await heldHttpAgent(mls.url, 'held-1')
    const { response, text } = await submit(mls.url, { region: 'us-east-1', payload: { n: 1 }, mode: 'async' })
    expect(response.status).toBe(202)
    const accepted = JSON.parse(text)
    expect(accepted).toEqual({ task_id: expect.any(String), state: 'queued', status_url: `/task/${accepted.task_id}` })
    expect(response.headers.get('location')).toBe(accepted.status_url)

    await waitFor(() => waiting() === 1, 'the agent holds the task')
    const running = await get(mls.url, accepted.status_url)
    expect(JSON.parse(running.text)).toMatchObject({ task_id: accepted.task_id, state: 'running', mode: 'async', region: 'us-east-1', finished_at: null })
    const notYet = await get(mls.url, `${accepted.status_url}/result`)
    expect(notYet.response.status).toBe(202)
    expect(notYet.response.headers.get('retry-after')).toBe('1')

    release()
    await waitFor(async () => JSON.parse((await get(mls.url, accepted.status_url)).text).state === 'done', 'the task is done')
    const view = JSON.parse((await get(mls.url, accepted.status_url)).text)
    expect(view).toMatchObject({ state: 'done', node_id: 'held-1', status: 201, response: { done: { n: 1 } }, attempts: [{ node_id: 'held-1', status: 201 }] })
    expect(view.finished_at).toEqual(expect.any(String))
    const result = await get(mls.url, `${accepted.status_url}/result`)
    expect(result.response.status).toBe(201)
    expect(result.text).toBe('{"done":{"n":1}}')
    expect(result.response.headers.get('content-type')).toBe('application/json')
    expect(result.response.headers.get('x-task-id')).toBe(accepted.task_id)
    expect(result.response.headers.get('x-moonlight-node')).toBe('held-1')
    expect(agent.received).toEqual([{ n: 1 }])
  })

  test('an async task keeps its routing fields: node_id picks the client, retry false stops at one attempt', async () => {
    const mls = server()
    for (const nodeId of ['a-1', 'a-2']) await startHttpAgent(mls.url, { nodeId, region: 'us-east-1' }).then((agent) => defer(agent.stop))
    const broken = await startHttpAgent(mls.url, { nodeId: 'a-broken', region: 'us-east-1', work: () => new Response('no', { status: 500 }) })
    defer(broken.stop)
    for (let i = 0; i < 4; i++) {
      const { task_id } = JSON.parse((await submit(mls.url, { region: 'us-east-1', payload: i, mode: 'async', node_id: 'a-2' })).text)
      const done = await get(mls.url, `/task/${task_id}/result?wait=5`)
      expect([done.response.status, done.response.headers.get('x-moonlight-node')]).toEqual([200, 'a-2'])
    }
    const { task_id } = JSON.parse((await submit(mls.url, { region: 'us-east-1', payload: 'x', mode: 'async', node_id: 'a-broken', retry: false })).text)
    const failed = JSON.parse((await get(mls.url, `/task/${task_id}/result?wait=5`)).text)
    expect(failed.attempts.map((attempt: { node_id: string }) => attempt.node_id)).toEqual(['a-broken'])
  })

  test('a failed task: state failed, and the result is the 502 a sync caller would have had', async () => {
    const mls = server({ retry_count: 1 })
    await startHttpAgent(mls.url, { nodeId: 'broken', region: 'us-east-1', work: () => new Response('boom', { status: 500 }) }).then((agent) =>
      defer(agent.stop),
    )
    const { text } = await submit(mls.url, { region: 'us-east-1', payload: 1, mode: 'async' })
    const { task_id } = JSON.parse(text)
    const result = await get(mls.url, `/task/${task_id}/result?wait=5`)
    expect(result.response.status).toBe(502)
    expect(JSON.parse(result.text)).toMatchObject({ code: 'all_attempts_failed' })
    const view = JSON.parse((await get(mls.url, `/task/${task_id}`)).text)
    expect(view).toMatchObject({ state: 'failed', status: 502, error: { code: 'all_attempts_failed' } })
    expect(view.attempts.map((attempt: { node_id: string }) => attempt.node_id)).toEqual(['broken', 'broken'])
  })

  test('long poll: ?wait=S returns as soon as the task is done, and 202 when S passes first', async () => {
    const mls = server()
    const { release, waiting } = await heldHttpAgent(mls.url, 'held-2')
    const { text } = await submit(mls.url, { region: 'us-east-1', payload: 'lp', mode: 'async' })
    const { task_id } = JSON.parse(text)
    await waitFor(() => waiting() === 1, 'the agent holds the task')
    const startedAt = Date.now()
    const short = await get(mls.url, `/task/${task_id}/result?wait=0.3`)
    expect(short.response.status).toBe(202)
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(250)

    const long = get(mls.url, `/task/${task_id}/result?wait=30`)
    await Bun.sleep(200)
    const releasedAt = Date.now()
    release()
    const done = await long
    expect(done.response.status).toBe(201)
    expect(done.text).toBe('{"done":"lp"}')
    // Woken by the finish, not by the next poll a second later.
    expect(Date.now() - releasedAt).toBeLessThan(900)
    const tooLong = await get(mls.url, `/task/${task_id}/result?wait=61`)
    expect(tooLong.response.status).toBe(400)
    // The token before the query: a caller without one learns nothing, not even what the route accepts.
    for (const headers of [{}, { authorization: 'Bearer not-a-token' }] as Record<string, string>[]) {
      const stranger = await get(mls.url, `/task/${task_id}/result?wait=61`, headers)
      expect({ status: stranger.response.status, code: JSON.parse(stranger.text).code }).toEqual({ status: 401, code: 'unauthorized' })
    }
  })

  test('cancel of a queued task: it never runs', async () => {
    const mls = server({ tasks: { concurrency: 1 } })
    const { agent, release, waiting } = await heldHttpAgent(mls.url, 'held-3')
    const first = JSON.parse((await submit(mls.url, { region: 'us-east-1', payload: 'first', mode: 'async' })).text)
    const second = JSON.parse((await submit(mls.url, { region: 'us-east-1', payload: 'second', mode: 'async' })).text)
    await waitFor(() => waiting() === 1, 'the first task runs')
    expect(JSON.parse((await get(mls.url, `/task/${second.task_id}`)).text).state).toBe('queued')
    const cancelled = await cancel(mls.url, second.task_id)
    expect(cancelled.response.status).toBe(200)
    expect(JSON.parse(cancelled.text)).toMatchObject({ task_id: second.task_id, state: 'cancelled' })
    release()
    await waitFor(async () => JSON.parse((await get(mls.url, `/task/${first.task_id}`)).text).state === 'done', 'the first is done')
    await Bun.sleep(300)
    expect(agent.received).toEqual(['first'])
    const result = await get(mls.url, `/task/${second.task_id}/result`)
    expect(result.response.status).toBe(409)
    expect(JSON.parse(result.text)).toMatchObject({ code: 'cancelled' })
    // Ended tasks cannot be cancelled again.
    const again = await cancel(mls.url, second.task_id)
    expect(again.response.status).toBe(409)
    expect(JSON.parse(again.text)).toMatchObject({ code: 'task_ended', state: 'cancelled' })
  })

  test('cancel of a running task on a WebSocket agent: the agent is sent {"type":"cancel"}, its late answer is dropped, the client is not blamed', async () => {
    const mls = server()
    const held: string[] = []
    const agent = await startWsAgent(mls.wsUrl, {
      nodeId: 'ws-held',
      region: 'us-east-1',
      answer: (_payload, taskId) => {
        held.push(taskId)
        return null
      },
    })
    defer(agent.close)
    const cancels: unknown[] = []
    agent.socket.addEventListener('message', (event) => {
      const message = JSON.parse(String(event.data))
      if (message.type === 'cancel') cancels.push(message)
    })
    const { task_id } = JSON.parse((await submit(mls.url, { region: 'us-east-1', payload: 'slow', mode: 'async' })).text)
    await waitFor(() => held.length === 1, 'the agent holds the task')
    const cancelled = await cancel(mls.url, task_id)
    expect(JSON.parse(cancelled.text).state).toBe('cancelled')
    await waitFor(() => cancels.length === 1, 'the cancel message')
    expect(cancels).toEqual([{ type: 'cancel', task_id }])
    agent.send({ type: 'task_response', payload: { task_id, response: 'too late' } })
    await Bun.sleep(200)
    expect(JSON.parse((await get(mls.url, `/task/${task_id}`)).text)).toMatchObject({ state: 'cancelled' })
    const clients = JSON.parse((await get(mls.url, '/clients')).text).clients
    expect(clients.find((client: { node_id: string }) => client.node_id === 'ws-held')).toMatchObject({ state: 'healthy', consecutive_failures: 0 })
  })

  test('unknown ids are 404 with a message; another token does not see the task; an admin does', async () => {
    const other = 'another-submitter-token-1'
    const admin = 'the-admin-token-000001'
    const mls = server({
      access: [
        { token: other, roles: ['submit'] },
        { token: admin, roles: ['admin'] },
      ],
    })
    await startHttpAgent(mls.url, { nodeId: 'plain', region: 'us-east-1' }).then((agent) => defer(agent.stop))
    const missing = await get(mls.url, '/task/no-such-task')
    expect(missing.response.status).toBe(404)
    expect(JSON.parse(missing.text)).toMatchObject({ code: 'unknown_task', task_id: 'no-such-task', error: expect.stringContaining('result_ttl') })
    const { task_id } = JSON.parse((await submit(mls.url, { region: 'us-east-1', payload: 7, mode: 'async' })).text)
    expect((await get(mls.url, `/task/${task_id}/result?wait=5`)).response.status).toBe(200)
    expect((await get(mls.url, `/task/${task_id}`, { authorization: `Bearer ${other}` })).response.status).toBe(404)
    expect((await cancel(mls.url, task_id, { authorization: `Bearer ${other}` })).response.status).toBe(404)
    expect((await get(mls.url, `/task/${task_id}`, { authorization: `Bearer ${admin}` })).response.status).toBe(200)
    expect((await get(mls.url, `/task/${task_id}`, {})).response.status).toBe(401)
  })

  test("task ids are 17 random letters and digits, not a count: another token's ids cannot be guessed from one's own", async () => {
    const mls = server()
    await startHttpAgent(mls.url, { nodeId: 'plain', region: 'us-east-1' }).then((agent) => defer(agent.stop))
    const ids: string[] = []
    for (let i = 0; i < 3; i++) {
      const sync = await submit(mls.url, { region: 'us-east-1', payload: i })
      ids.push(sync.response.headers.get('x-task-id') ?? '')
      ids.push(JSON.parse((await submit(mls.url, { region: 'us-east-1', payload: i, mode: 'async' })).text).task_id)
    }
    for (const id of ids) expect(id).toMatch(/^[A-Za-z0-9]{17}$/)
    expect(new Set(ids).size).toBe(ids.length)
    // Consecutive ids share no prefix a counter would leave (odds of 8 shared leading characters: 62^-8).
    for (let i = 1; i < ids.length; i++) expect(ids[i]!.slice(0, 8)).not.toBe(ids[i - 1]!.slice(0, 8))
  })

  test('results expire after tasks.result_ttl: then 404', async () => {
    const mls = server({ tasks: { result_ttl: 0.5 } })
    await startHttpAgent(mls.url, { nodeId: 'plain', region: 'us-east-1' }).then((agent) => defer(agent.stop))
    const { task_id } = JSON.parse((await submit(mls.url, { region: 'us-east-1', payload: 1, mode: 'async' })).text)
    expect((await get(mls.url, `/task/${task_id}/result?wait=5`)).response.status).toBe(200)
    await Bun.sleep(700)
    expect((await get(mls.url, `/task/${task_id}`)).response.status).toBe(404)
  })
})

describe('idempotency keys', () => {
  test('a sync task sent twice with the same key runs once; the replay is marked and identical', async () => {
    const mls = server()
    const agent = await startHttpAgent(mls.url, { nodeId: 'counted', region: 'us-east-1' })
    defer(agent.stop)
    const body = { region: 'us-east-1', payload: { charge: 42 } }
    const first = await submit(mls.url, body, { 'idempotency-key': 'charge-42' })
    const second = await submit(mls.url, body, { 'idempotency-key': 'charge-42' })
    expect(first.response.status).toBe(200)
    expect(second.response.status).toBe(200)
    expect(second.text).toBe(first.text)
    expect(second.response.headers.get('x-task-id')).toBe(first.response.headers.get('x-task-id'))
    expect(first.response.headers.get('idempotent-replayed')).toBeNull()
    expect(second.response.headers.get('idempotent-replayed')).toBe('true')
    expect(agent.received).toEqual([{ charge: 42 }])
    // Without a key, the same body runs again.
    await submit(mls.url, body)
    expect(agent.received).toHaveLength(2)
  })

  test('two requests with one key at once: one run; the second awaits the first and gets its answer', async () => {
    const mls = server()
    const { agent, release, waiting } = await heldHttpAgent(mls.url, 'held-4')
    const body = { region: 'us-east-1', payload: 'once' }
    const calls = Array.from({ length: 5 }, () => submit(mls.url, body, { 'idempotency-key': 'at-once' }))
    await waitFor(() => waiting() === 1, 'the first run')
    await Bun.sleep(200)
    expect(waiting()).toBe(1)
    release()
    const answers = await Promise.all(calls)
    expect(answers.map(({ response }) => response.status)).toEqual([201, 201, 201, 201, 201])
    expect(new Set(answers.map(({ text }) => text))).toEqual(new Set(['{"done":"once"}']))
    expect(answers.filter(({ response }) => response.headers.get('idempotent-replayed') === 'true')).toHaveLength(4)
    expect(agent.received).toEqual(['once'])
  })

  test('an async task with a key: the retry gets the same task id, and it runs once', async () => {
    const mls = server()
    const agent = await startHttpAgent(mls.url, { nodeId: 'counted', region: 'us-east-1' })
    defer(agent.stop)
    const body = { region: 'us-east-1', payload: 'job', mode: 'async' }
    const first = JSON.parse((await submit(mls.url, body, { 'idempotency-key': 'job-1' })).text)
    const replay = await submit(mls.url, body, { 'idempotency-key': 'job-1' })
    expect(replay.response.status).toBe(202)
    expect(replay.response.headers.get('idempotent-replayed')).toBe('true')
    expect(JSON.parse(replay.text).task_id).toBe(first.task_id)
    await get(mls.url, `/task/${first.task_id}/result?wait=5`)
    expect(agent.received).toEqual(['job'])
  })

  test('the same key with a different body: 422; keys are per token; a bad key is 400', async () => {
    const other = 'another-submitter-token-2'
    const mls = server({ access: [{ token: other, roles: ['submit'] }] })
    const agent = await startHttpAgent(mls.url, { nodeId: 'counted', region: 'us-east-1' })
    defer(agent.stop)
    await submit(mls.url, { region: 'us-east-1', payload: 1 }, { 'idempotency-key': 'k' })
    const mismatch = await submit(mls.url, { region: 'us-east-1', payload: 2 }, { 'idempotency-key': 'k' })
    expect(mismatch.response.status).toBe(422)
    expect(JSON.parse(mismatch.text)).toMatchObject({ code: 'idempotency_mismatch', error: expect.stringContaining('different request body') })
    const otherToken = await submit(mls.url, { region: 'us-east-1', payload: 2 }, { 'idempotency-key': 'k', authorization: `Bearer ${other}` })
    expect(otherToken.response.status).toBe(200)
    expect(agent.received).toEqual([1, 2])
    for (const bad of ['', 'x'.repeat(256), 'has space']) {
      const refused = await submit(mls.url, { region: 'us-east-1', payload: 3 }, { 'idempotency-key': bad })
      expect([bad.length, refused.response.status, JSON.parse(refused.text).code]).toEqual([bad.length, 400, 'bad_request'])
    }
    const broadcast = await submit(mls.url, { region: 'us-east-1', payload: 3, mode: 'broadcast' }, { 'idempotency-key': 'b' })
    expect(broadcast.response.status).toBe(400)
    expect(agent.received).toEqual([1, 2])
  })
})

describe('the store bound', () => {
  test('past tasks.max_results the oldest finished task is evicted and counted in /metrics; with none finished, 503 too_many_tasks', async () => {
    const mls = server({ tasks: { max_results: 2 } })
    await startHttpAgent(mls.url, { nodeId: 'plain', region: 'us-east-1' }).then((agent) => defer(agent.stop))
    const ids: string[] = []
    for (let i = 0; i < 3; i++) {
      const { task_id } = JSON.parse((await submit(mls.url, { region: 'us-east-1', payload: i, mode: 'async' })).text)
      await get(mls.url, `/task/${task_id}/result?wait=5`)
      ids.push(task_id)
    }
    expect((await get(mls.url, `/task/${ids[0]}`)).response.status).toBe(404)
    expect((await get(mls.url, `/task/${ids[2]}`)).response.status).toBe(200)
    const metrics = await (await fetch(`${mls.url}/metrics`)).text()
    expect(metrics).toContain('moonlight_stored_tasks_evicted_total 1')
    expect(metrics).toContain('moonlight_stored_tasks 2')

    const full = server({ tasks: { max_results: 1 } })
    const { waiting } = await heldHttpAgent(full.url, 'held-5')
    expect((await submit(full.url, { region: 'us-east-1', payload: 'a', mode: 'async' })).response.status).toBe(202)
    await waitFor(() => waiting() === 1, 'the task runs')
    const refused = await submit(full.url, { region: 'us-east-1', payload: 'b', mode: 'async' })
    expect(refused.response.status).toBe(503)
    expect(refused.response.headers.get('retry-after')).toBe('1')
    expect(JSON.parse(refused.text)).toMatchObject({ code: 'too_many_tasks' })
  })

  test('a sync task without a key is not stored: nothing to fetch later', async () => {
    const mls = server()
    await startHttpAgent(mls.url, { nodeId: 'plain', region: 'us-east-1' }).then((agent) => defer(agent.stop))
    const sync = await postTask(mls.url, { region: 'us-east-1', payload: 1 })
    expect((await get(mls.url, `/task/${sync.headers.get('x-task-id')}`)).response.status).toBe(404)
  })
})

describe('moonlight agent and cancel', () => {
  for (const protocol of ['ws', 'http'] as const) {
    test(`a cancelled task's --exec process is stopped (${protocol} agent)`, async () => {
      const mls = server()
      const pidFile = `/tmp/mls-cancel-${crypto.randomUUID()}.pid`
      defer(() => Bun.spawnSync(['rm', '-f', pidFile]))
      const child = startCli([
        'agent',
        '--server',
        mls.url,
        '--token',
        TOKEN,
        '--node-id',
        `exec-${protocol}`,
        '--region',
        'us-east-1',
        ...(protocol === 'http' ? ['--http', '0'] : []),
        '--exec',
        `sleep 30 & echo $! > ${pidFile}; wait`,
      ])
      defer(async () => {
        child.kill('SIGKILL')
        await child.exited
      })
      await child.waitForOutput(`registered as exec-${protocol}`)
      const { task_id } = JSON.parse((await submit(mls.url, { region: 'us-east-1', payload: 'long', mode: 'async' })).text)
      await waitFor(async () => (await Bun.file(pidFile).exists()) && (await Bun.file(pidFile).text()).trim() !== '', 'the sleep started')
      const pid = Number((await Bun.file(pidFile).text()).trim())
      expect(() => process.kill(pid, 0)).not.toThrow()
      expect(JSON.parse((await cancel(mls.url, task_id)).text).state).toBe('cancelled')
      await waitFor(() => {
        try {
          process.kill(pid, 0)
          return false
        } catch {
          return true
        }
      }, 'the sleep process is gone')
      expect(JSON.parse((await get(mls.url, `/task/${task_id}`)).text).state).toBe('cancelled')
    })
  }
})
