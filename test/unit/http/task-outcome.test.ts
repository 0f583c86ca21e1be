import { expect, test } from 'bun:test'
import type { Client } from '../../../src/fleet/registry.ts'
import { outcomeResponse } from '../../../src/http/task-outcome.ts'
import type { Outcome } from '../../../src/tasks/outcome.ts'
import type { Answer } from '../../../src/transports/types.ts'

const answered = (answer: Answer, nodeId: string, failed = 0): Outcome => ({
  kind: 'answered',
  answer,
  client: { nodeId } as Client,
  failedAttempts: Array.from({ length: failed }, () => ({ node_id: 'other', kind: 'unreachable' as const, reason: 'down' })),
})

test("answers sharing one header record (an HTTP agent's repeated head) each keep their own task id, node, attempts and instance", async () => {
  // What the HTTP transport hands back for two answers of the same head: one record, marked shared.
  const headers = { 'content-type': 'application/json', 'x-request-kind': 'echo', 'x-task-id': 'the agent may not set this' }
  const first = outcomeResponse(answered({ status: 200, headers, body: '{"n":1}', sharedHeaders: true }, 'node-a'), 'task-1', 'details', 'instance-1')
  const second = outcomeResponse(answered({ status: 201, headers, body: '{"n":2}', sharedHeaders: true }, 'node-b', 2), 'task-2', 'details')
  const third = outcomeResponse(
    answered({ status: 200, headers, body: '{"n":3}', sharedHeaders: true, instance: 'instance-9' }, 'node-c'),
    'task-3',
    'details',
    'instance-1',
  )
  const read = (response: Response) => response.headers.toJSON()
  expect(read(first)).toEqual({
    'content-type': 'application/json',
    'x-request-kind': 'echo',
    'x-content-type-options': 'nosniff',
    'content-security-policy': 'sandbox',
    'x-task-id': 'task-1',
    'x-moonlight-node': 'node-a',
    'x-moonlight-attempts': '1',
    'x-moonlight-instance': 'instance-1',
  })
  // Built after the first: the first's headers are its own, not the kept ones set again.
  expect(first.headers.get('x-task-id')).toBe('task-1')
  expect(read(second)).toMatchObject({ 'x-task-id': 'task-2', 'x-moonlight-node': 'node-b', 'x-moonlight-attempts': '3' })
  expect(second.headers.has('x-moonlight-instance')).toBe(false)
  expect(read(third)).toMatchObject({ 'x-task-id': 'task-3', 'x-moonlight-instance': 'instance-9' })
  // The same node and attempts again, another instance: what did not change is still there, what did is new.
  const fourth = outcomeResponse(answered({ status: 200, headers, body: '{}', sharedHeaders: true }, 'node-c'), 'task-4', 'details', 'instance-1')
  expect(read(fourth)).toMatchObject({ 'x-task-id': 'task-4', 'x-moonlight-node': 'node-c', 'x-moonlight-attempts': '1', 'x-moonlight-instance': 'instance-1' })
  expect(read(third)).toMatchObject({ 'x-task-id': 'task-3', 'x-moonlight-node': 'node-c', 'x-moonlight-instance': 'instance-9' })
  expect([first.status, second.status, await second.text()]).toEqual([200, 201, '{"n":2}'])
  // The shared record itself is never written to.
  expect(headers).toEqual({ 'content-type': 'application/json', 'x-request-kind': 'echo', 'x-task-id': 'the agent may not set this' })
})

test('an answer with headers of its own gets the same headers as a shared one would', () => {
  const headers = { 'content-type': 'text/plain' }
  const own = outcomeResponse(answered({ status: 200, headers: { ...headers }, body: 'x' }, 'node-a'), 'task-1', 'details', 'i')
  const shared = outcomeResponse(answered({ status: 200, headers, body: 'x', sharedHeaders: true }, 'node-a'), 'task-1', 'details', 'i')
  expect(shared.headers.toJSON()).toEqual(own.headers.toJSON())
})
