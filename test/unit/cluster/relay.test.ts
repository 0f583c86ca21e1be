import { describe, expect, test } from 'bun:test'
import { ClusterKeys } from '../../../src/cluster/keys.ts'
import { readRelayRequest, relayMembers, replyText } from '../../../src/cluster/messages.ts'
import type { RedisConnection } from '../../../src/cluster/redis-connection.ts'
import { RelayReplies, RelayTransport } from '../../../src/cluster/relay.ts'
import type { Client } from '../../../src/fleet/registry.ts'
import { Deadline } from '../../../src/tasks/deadlines.ts'
import type { AttemptError } from '../../../src/transports/types.ts'

/** A Redis connection that records what is published, each PUBLISH answered by `receivers` (or failing, if it throws). */
function fakeConnection(receivers: () => number = () => 1) {
  const published: Array<{ channel: string; message: string }> = []
  const connection = {
    up: true,
    publish(channel: string, message: string): Promise<unknown> {
      published.push({ channel, message })
      try {
        return Promise.resolve(receivers())
      } catch (error) {
        return Promise.reject(error)
      }
    },
  }
  return { connection: connection as unknown as RedisConnection, published }
}

const keys = new ClusterKeys('t:')
const agent = (nodeId: string, instance = 'b') => ({ nodeId, instance }) as unknown as Client
const later = () => new Deadline(performance.now() + 30_000)
const turn = () => new Promise<void>((resolve) => setImmediate(resolve))
const ok = (key: string, body: string) => replyText({ key, status: 200, headers: { 'x-n': key } }, body, true)

function transport(options: { batches?: boolean; receivers?: () => number } = {}) {
  const { connection, published } = fakeConnection(options.receivers)
  const relay = new RelayTransport(
    connection,
    keys,
    () => 'a',
    () => ({ relay_batch: options.batches ?? true }),
    options.batches ?? true,
  )
  return { relay, published }
}

describe('relayed tasks, batched per holder per turn', () => {
  test('a task to a holder with nothing else in flight goes at once, as its own message', () => {
    const { relay, published } = transport()
    void relay.send(agent('n1'), 't-1', '{"job":1}', later())
    expect(published).toHaveLength(1)
    expect(published[0]!.channel).toBe('t:relay:b')
    expect(readRelayRequest(published[0]!.message)).toMatchObject({ origin: 'a', task_id: 't-1', node_id: 'n1', raw_answer: true, batch_replies: true })
  })

  test('the tasks that follow in the same turn go as one message, each with its own key, task, node, trace and payload; each answer reaches its own caller', async () => {
    const { relay, published } = transport()
    const trace = { traceparent: '00-0123456789abcdef0123456789abcdef-0123456789abcdef-01' }
    const answers = [
      relay.send(agent('n1'), 't-1', '{"job":1}', later()),
      relay.send(agent('n2'), 't-2', '"two\\n"', later(), undefined, trace),
      relay.send(agent('n1'), 't-3', '[3]', later()),
    ]
    expect(published).toHaveLength(1)
    await turn()
    expect(published).toHaveLength(2)
    const members = relayMembers(published[1]!.message)
    expect(members.map((text) => readRelayRequest(text))).toMatchObject([
      { task_id: 't-2', node_id: 'n2', traceparent: trace.traceparent },
      { task_id: 't-3', node_id: 'n1' },
    ])
    expect(members.map((text) => JSON.parse(text).payload)).toEqual(['two\n', [3]])
    const requests = [published[0]!.message, ...members].map((text) => readRelayRequest(text)!)
    expect(new Set(requests.map((request) => request.key)).size).toBe(3)
    // The holder answers all three in one message, in another order, one member broken.
    relay.onMessage(
      `[${[ok(requests[2]!.key, 'three'), '{"key":', ok(requests[0]!.key, 'one\nline'), ok(requests[1]!.key, '')].map((text) => text.length).join(',')}]\n${ok(requests[2]!.key, 'three')}{"key":${ok(requests[0]!.key, 'one\nline')}${ok(requests[1]!.key, '')}`,
    )
    expect((await Promise.all(answers)).map((answer) => [answer.body, answer.instance, answer.headers['x-n']])).toEqual([
      ['one\nline', 'b', requests[0]!.key],
      ['', 'b', requests[1]!.key],
      ['three', 'b', requests[2]!.key],
    ])
    expect(relay.pending).toBe(0)
  })

  test('a holder that does not read batches gets every task at once, alone, and is not asked for batched answers', () => {
    const { relay, published } = transport({ batches: false })
    for (let i = 0; i < 3; i++) void relay.send(agent(`n${i}`), `t-${i}`, '{}', later())
    expect(published).toHaveLength(3)
    for (const { message } of published) {
      expect(relayMembers(message)).toEqual([message])
      expect(readRelayRequest(message)?.batch_replies).toBeUndefined()
    }
  })

  test("nobody listening on the holder's channel: every task of the batch fails as unreachable", async () => {
    let receivers = 1
    const { relay, published } = transport({ receivers: () => receivers })
    const first = relay.send(agent('n1'), 't-0', '{}', later()).catch((error: AttemptError) => error)
    receivers = 0
    const batch = [1, 2, 3].map((i) => relay.send(agent('n1'), `t-${i}`, '{}', later()).catch((error: AttemptError) => error))
    await turn()
    expect(published).toHaveLength(2)
    expect((await Promise.all(batch)).map((error) => (error as AttemptError).kind)).toEqual(['unreachable', 'unreachable', 'unreachable'])
    relay.failHolder('b', 'gone')
    expect(((await first) as AttemptError).kind).toBe('disconnected')
  })

  test('a failed PUBLISH fails every task of the batch as disconnected', async () => {
    let fail = false
    const { relay } = transport({
      receivers: () => {
        if (fail) throw new Error('redis is down')
        return 1
      },
    })
    void relay.send(agent('n1'), 't-0', '{}', later()).catch(() => undefined)
    fail = true
    const batch = [1, 2].map((i) => relay.send(agent('n1'), `t-${i}`, '{}', later()).catch((error: AttemptError) => error))
    await turn()
    expect((await Promise.all(batch)).map((error) => (error as AttemptError).kind)).toEqual(['disconnected', 'disconnected'])
  })

  test('a task that expires or fails over before the end of the turn is not sent; the holder dying fails the queued ones too', async () => {
    const { relay, published } = transport()
    void relay.send(agent('n1'), 't-0', '{}', later()).catch(() => undefined)
    const short = new Deadline(performance.now() + 30_000)
    const expired = relay.send(agent('n1'), 't-1', '{}', short).catch((error: AttemptError) => error)
    const kept = relay.send(agent('n1'), 't-2', '{}', later())
    const toC = relay.send(agent('n9', 'c'), 't-3', '{}', later())
    short.fire()
    expect(((await expired) as AttemptError).kind).toBe('timeout')
    await turn()
    // To b: t-0 at once, then t-2 alone (t-1 is gone); to c: t-3 at once (nothing else in flight to c).
    expect(published.map(({ channel, message }) => [channel, readRelayRequest(message)?.task_id])).toEqual([
      ['t:relay:b', 't-0'],
      ['t:relay:c', 't-3'],
      ['t:relay:b', 't-2'],
    ])
    relay.failHolder('b', 'instance b stopped')
    expect(await kept.catch((error: AttemptError) => error.kind)).toBe('disconnected')
    relay.failHolder('c', 'instance c stopped')
    expect(await toC.catch((error: AttemptError) => error.kind)).toBe('disconnected')
    expect(relay.pending).toBe(0)
  })
})

describe("the holder's answers, batched per origin per turn", () => {
  test('an answer with nothing else of its origin in the works goes at once; those ready together go as one message', async () => {
    const { connection, published } = fakeConnection()
    const replies = new RelayReplies(connection, keys)
    replies.expect('a')
    replies.send('a', 'alone')
    expect(published).toEqual([{ channel: 't:reply:a', message: 'alone' }])
    for (let i = 0; i < 4; i++) replies.expect('a')
    replies.expect('c')
    replies.send('a', 'r1')
    // c's only task: at once, beside a's that wait for the end of the turn.
    replies.send('c', 'to c')
    replies.send('a', 'r2\nbody')
    expect(published.slice(1)).toEqual([{ channel: 't:reply:c', message: 'to c' }])
    await turn()
    expect(published.slice(2)).toEqual([{ channel: 't:reply:a', message: '[2,7]\nr1r2\nbody' }])
    replies.send('a', 'r3')
    replies.send('a', 'r4')
    await turn()
    expect(published.slice(3)).toEqual([{ channel: 't:reply:a', message: '[2,2]\nr3r4' }])
  })
})
