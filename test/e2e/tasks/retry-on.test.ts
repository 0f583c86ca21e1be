/**
 * retry_on (issue 21): which attempt failures a task may be retried after, with real agents that
 * drop the connection once they hold the task. With ["unreachable"] a task is never sent twice.
 */
import { describe, expect, test } from 'bun:test'
import type { Socket } from 'bun'
import { createClient } from '../../../packages/sdk/src/index.ts'
import { deadPort, postJson, postTask, startHttpAgent, startWsAgent, TOKEN, testScope } from '../../support/helpers.ts'

const { defer, server } = testScope()

/** A raw HTTP agent: reads each request whole, then answers 200 or closes the connection without a word, as `drop` says. */
async function rawAgent(serverUrl: string, nodeId: string, region: string, drop: (body: string, index: number) => boolean) {
  const bodies: string[] = []
  const listener = Bun.listen<{ buffer: string }>({
    hostname: '127.0.0.1',
    port: 0,
    socket: {
      open(socket) {
        socket.data = { buffer: '' }
      },
      data(socket: Socket<{ buffer: string }>, chunk) {
        socket.data.buffer += chunk.toString('latin1')
        for (;;) {
          const end = socket.data.buffer.indexOf('\r\n\r\n')
          if (end === -1) return
          const length = Number(/content-length: *(\d+)/i.exec(socket.data.buffer.slice(0, end))?.[1] ?? 0)
          if (socket.data.buffer.length < end + 4 + length) return
          const body = socket.data.buffer.slice(end + 4, end + 4 + length)
          socket.data.buffer = socket.data.buffer.slice(end + 4 + length)
          bodies.push(body)
          if (drop(body, bodies.length - 1)) {
            socket.end()
            return
          }
          socket.write(`HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`)
        }
      },
    },
  })
  defer(() => listener.stop(true))
  const beat = await postJson(`${serverUrl}/client/heartbeat`, { ip: '127.0.0.1', node_id: nodeId, token: TOKEN, region, port: listener.port })
  expect(beat.status).toBe(200)
  return { bodies }
}

/** A dropping agent alone in us-east-1 and a good one in us-west-1: a retry climbs to usa and finds the good one. */
async function dropStory(overrides: Parameters<typeof server>[0] = {}) {
  const mls = server({ retry_count: 2, ...overrides })
  const dropper = await rawAgent(mls.url, 'dropper', 'us-east-1', () => true)
  const good = await startHttpAgent(mls.url, { nodeId: 'good', region: 'us-west-1' })
  defer(good.stop)
  return { mls, dropper, good }
}

describe('retry_on', () => {
  test('["unreachable"]: an agent that drops the connection holding the task gets it once, and the caller a 502 naming "lost"', async () => {
    const { mls, dropper, good } = await dropStory()
    const result = await postTask(mls.url, { region: 'us-east-1', payload: { job: 1 }, retry_on: ['unreachable'] })
    expect(result.status).toBe(502)
    expect(result.headers.get('content-type')).toContain('application/json')
    expect(result.json()).toMatchObject({
      code: 'all_attempts_failed',
      not_retried: 'lost',
      attempts: [{ node_id: 'dropper', kind: 'disconnected' }],
    })
    expect(result.json().error).toContain('"lost"')
    expect(dropper.bodies).toEqual(['{"job":1}'])
    expect(good.received).toEqual([])
  })

  test('the SDK client sends retry_on: the same task, once, and a MoonlightError naming "lost"', async () => {
    const { mls, dropper, good } = await dropStory()
    const client = createClient({ server: mls.url, token: TOKEN })
    const failure = await client.task('us-east-1', { job: 2 }, { retry_on: ['unreachable'] }).catch((error: unknown) => error)
    expect(failure).toMatchObject({ name: 'MoonlightError', status: 502, code: 'all_attempts_failed', details: { not_retried: 'lost' } })
    expect(dropper.bodies).toEqual(['{"job":2}'])
    expect(good.received).toEqual([])
  })

  test('by default (all three) the same task is retried and answered elsewhere, as before', async () => {
    const { mls, dropper, good } = await dropStory()
    const result = await postTask(mls.url, { region: 'us-east-1', payload: { job: 1 } })
    expect(result.status).toBe(200)
    expect(result.headers.get('x-moonlight-node')).toBe('good')
    expect(dropper.bodies).toEqual(['{"job":1}'])
    expect(good.received).toEqual([{ job: 1 }])
  })

  test('["unreachable"] still retries an agent that never got the task', async () => {
    const mls = server({ retry_count: 2 })
    expect(
      (await postJson(`${mls.url}/client/heartbeat`, { ip: '127.0.0.1', node_id: 'dead', token: TOKEN, region: 'us-east-1', port: deadPort() })).status,
    ).toBe(200)
    const good = await startHttpAgent(mls.url, { nodeId: 'good', region: 'us-west-1' })
    defer(good.stop)
    const result = await postTask(mls.url, { region: 'us-east-1', payload: 1, retry_on: ['unreachable'] })
    expect(result.status).toBe(200)
    expect(result.headers.get('x-moonlight-node')).toBe('good')
  })

  test('["unreachable", "lost"]: a 5xx is not retried, and the 502 names "status"', async () => {
    const mls = server({ retry_count: 2 })
    const failing = await startHttpAgent(mls.url, { nodeId: 'failing', region: 'us-east-1', work: () => new Response('half done', { status: 500 }) })
    defer(failing.stop)
    const good = await startHttpAgent(mls.url, { nodeId: 'good', region: 'us-west-1' })
    defer(good.stop)
    const result = await postTask(mls.url, { region: 'us-east-1', payload: 1, retry_on: ['unreachable', 'lost'] })
    expect(result.status).toBe(502)
    expect(result.json()).toMatchObject({ not_retried: 'status', attempts: [{ node_id: 'failing', kind: 'status', status: 500 }] })
    expect(failing.received).toHaveLength(1)
    expect(good.received).toEqual([])
  })

  test('a WebSocket agent that disconnects holding the task: lost, not retried with ["unreachable"]', async () => {
    const mls = server({ retry_count: 2 })
    const leaving = await startWsAgent(mls.wsUrl, {
      nodeId: 'leaving',
      region: 'us-east-1',
      answer: () => {
        queueMicrotask(() => leaving.close())
        return null
      },
    })
    const good = await startHttpAgent(mls.url, { nodeId: 'good', region: 'us-west-1' })
    defer(good.stop)
    const result = await postTask(mls.url, { region: 'us-east-1', payload: 1, retry_on: ['unreachable'] })
    expect(result.status).toBe(502)
    expect(result.json()).toMatchObject({ not_retried: 'lost', attempts: [{ node_id: 'leaving', kind: 'disconnected' }] })
    expect(leaving.received).toEqual([1])
    expect(good.received).toEqual([])
  })

  test('config routing.retry_on is the default; a task may narrow it, and asking wider is a 400 naming the field', async () => {
    const { mls, dropper, good } = await dropStory({ routing: { retry_on: ['unreachable'] } })
    const result = await postTask(mls.url, { region: 'us-east-1', payload: 1 })
    expect(result.status).toBe(502)
    expect(result.json()).toMatchObject({ not_retried: 'lost' })
    const wider = await postTask(mls.url, { region: 'us-east-1', payload: 2, retry_on: ['unreachable', 'lost'] })
    expect(wider.status).toBe(400)
    expect(wider.json()).toEqual({
      error: 'retry_on may only narrow the server\'s routing.retry_on (["unreachable"]): "lost" is not in it',
      code: 'invalid_body',
      issues: [{ path: 'retry_on', message: '"lost" is not in the server\'s routing.retry_on' }],
    })
    const narrower = await postTask(mls.url, { region: 'us-east-1', payload: 3, retry_on: [] })
    expect(narrower.status).toBe(502)
    expect(dropper.bodies).toEqual(['1', '3'])
    expect(good.received).toEqual([])
  })

  test('a bad retry_on is a 400: an unknown class, a class twice, on a broadcast', async () => {
    const mls = server()
    for (const retryOn of [['sometimes'], ['lost', 'lost'], 'lost']) {
      const result = await postTask(mls.url, { region: 'us-east-1', payload: 1, retry_on: retryOn })
      expect({ retryOn, status: result.status, code: result.json().code, path: result.json().issues[0].path }).toEqual({
        retryOn,
        status: 400,
        code: 'invalid_body',
        path: expect.stringContaining('retry_on'),
      })
    }
    const broadcast = await postTask(mls.url, { region: 'us-east-1', payload: 1, mode: 'broadcast', retry_on: ['unreachable'] })
    expect(broadcast.status).toBe(400)
  })

  test('["unreachable"] or "retry": false: a pooled connection the agent closes as it reads the task is not resent on a fresh one (the agent may have run it)', async () => {
    const at = async (retryOn: string[] | undefined, retry?: boolean) => {
      const mls = server({ retry_count: 0 })
      // The second request over the first connection is read, then the connection closed: the pool's stale-socket case.
      const agent = await rawAgent(mls.url, 'closer', 'us-east-1', (_body, index) => index === 1)
      expect((await postTask(mls.url, { region: 'us-east-1', payload: 'one' })).status).toBe(200)
      const second = await postTask(mls.url, { region: 'us-east-1', payload: 'two', retry, ...(retryOn ? { retry_on: retryOn } : {}) })
      return { status: second.status, twos: agent.bodies.filter((body) => body === '"two"').length }
    }
    // Today's default: the pool sends it once more on a fresh connection, and the agent sees it twice.
    expect(await at(undefined)).toEqual({ status: 200, twos: 2 })
    expect(await at(['unreachable'])).toEqual({ status: 502, twos: 1 })
    // "retry": false is one attempt, sent once.
    expect(await at(undefined, false)).toEqual({ status: 502, twos: 1 })
  })
})
