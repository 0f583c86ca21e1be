/**
 * moonlight-sdk carries no zod, so it keeps the wire's shapes as plain types and checks frames by
 * hand. These tests hold them to the server's schemas: the type assertions fail `tsc` when a schema
 * changes under the SDK, and the frames the server builds must parse as the SDK reads them.
 */
import { describe, expect, test } from 'bun:test'
import type { z } from 'zod'
import { parseInbound } from '../../../packages/sdk/src/_websocket.ts'
import type { AcceptedTask, AgentInbound, BroadcastReply, HeartbeatReply, RoutingOptions, TaskView } from '../../../packages/sdk/src/wire.ts'
import { NO_RETRY_HEADER as SDK_NO_RETRY_HEADER } from '../../../packages/sdk/src/wire.ts'
import type { heartbeatReplySchema } from '../../../src/wire/agent-hello.ts'
import type { acceptedTaskSchema, taskViewSchema } from '../../../src/wire/async-task.ts'
import { type broadcastReplySchema, NO_RETRY_HEADER, type taskRequestSchema } from '../../../src/wire/task.ts'
import { cancelFrame, taskFrame, type wsAgentInboundSchema } from '../../../src/wire/ws.ts'

/** Compiles only when A is assignable to B. */
type Assignable<A extends B, B> = [A, B]

// What the server sends is what the SDK's types say it receives…
export type ServerToSdk = [
  Assignable<z.infer<typeof taskViewSchema>, TaskView>,
  Assignable<z.infer<typeof acceptedTaskSchema>, AcceptedTask>,
  Assignable<z.infer<typeof broadcastReplySchema>, BroadcastReply>,
  Assignable<z.infer<typeof heartbeatReplySchema>, HeartbeatReply>,
  Assignable<z.infer<typeof wsAgentInboundSchema>, AgentInbound>,
]
// …and the routing options the SDK sends are fields the server's task request takes.
export type SdkToServer = Assignable<Required<RoutingOptions>, Required<Pick<z.input<typeof taskRequestSchema>, keyof RoutingOptions>>>

describe('the SDK reads the frames the server writes', () => {
  test('task and cancel frames, built by the server, parse', () => {
    expect(parseInbound(taskFrame('k3-1', '{"n": 98765432109876543210}'))).toMatchObject({ type: 'task', task_id: 'k3-1' })
    expect(parseInbound(cancelFrame('k3-1'))).toEqual({ type: 'cancel', task_id: 'k3-1' })
  })

  test('registered, heartbeat_ack and error frames parse; anything else is named and ignored', () => {
    const registered = { type: 'registered', payload: { node_id: 'a', region: 'r', weight: 1, heartbeat_interval: 30, server_time: 'now' } }
    expect(parseInbound(JSON.stringify(registered))).toEqual(registered as AgentInbound)
    expect(parseInbound('{"type":"heartbeat_ack","payload":{"server_time":"now"}}')).toMatchObject({ type: 'heartbeat_ack' })
    expect(parseInbound('{"type":"error","payload":{"message":"bad","code":"invalid_message"}}')).toMatchObject({ type: 'error' })
    expect(parseInbound('{"type":"task"}')).toBe('a "task" without task_id')
    expect(parseInbound('{"type":"surprise"}')).toBe('unknown type "surprise"')
    expect(parseInbound('not json')).toBe('not JSON')
  })

  test('an HTTP agent says "don\'t retry" with the header the server reads', () => {
    expect(SDK_NO_RETRY_HEADER).toBe(NO_RETRY_HEADER)
  })
})
