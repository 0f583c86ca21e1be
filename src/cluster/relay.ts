import type { Client, Registry } from '../fleet/registry.ts'
import { hasSlot } from '../fleet/slots.ts'
import type { TraceHeaders } from '../observe/tracing/trace-context.ts'
import type { Deadline, DeadlineTimer, Expirable } from '../tasks/deadlines.ts'
import type { SlotQueue } from '../tasks/slot-waiting.ts'
import { type Answer, AttemptError, type Transport, timedOut } from '../transports/types.ts'
import { memberSpan } from '../wire/json-text.ts'
import { traceFields } from '../wire/ws.ts'
import type { ClusterKeys } from './keys.ts'
import { type RelayReply, readRelayReply, readRelayRequest, replyText } from './messages.ts'
import type { RedisConnection } from './redis-connection.ts'

/** One relayed attempt waiting for its reply; fails over at once if its holder goes away. */
class RelayWaiter implements Expirable {
  resolve!: (answer: Answer) => void
  reject!: (error: AttemptError) => void

  constructor(
    private readonly transport: RelayTransport,
    readonly key: string,
    readonly instance: string,
    readonly deadline: Deadline,
  ) {}

  expire(): void {
    this.transport.fail(this.key, timedOut())
  }
}

/**
 * Tasks for WebSocket agents held by another instance: published on the holder's relay channel,
 * sent down the agent's socket there, and answered on this instance's reply channel. The payload
 * and the answer travel as their own text. A holder that dies fails its relayed attempts at once
 * (failHolder), like a WebSocket disconnect, and a reply nobody waits for any more is dropped.
 */
export class RelayTransport implements Transport {
  private readonly waiting = new Map<string, RelayWaiter>()
  private sequence = 0
  relayed = 0

  constructor(
    private readonly connection: RedisConnection,
    private readonly keys: ClusterKeys,
    /** This instance's id, read when a task is relayed (it is settled only once the server listens). */
    private readonly selfId: () => string,
  ) {}

  private get self(): string {
    return this.selfId()
  }

  get pending(): number {
    return this.waiting.size
  }

  send(client: Client, taskId: string, payloadJson: string, deadline: Deadline, _mayResend?: boolean, trace?: TraceHeaders): Promise<Answer> {
    if (deadline.expired) return Promise.reject(timedOut())
    const holder = client.instance
    if (holder === undefined || !this.connection.up)
      return Promise.reject(new AttemptError('unreachable', `cannot reach instance ${holder ?? '?'}: the cluster store is down`))
    const key = `${this.self}/${++this.sequence}`
    const waiter = new RelayWaiter(this, key, holder, deadline)
    const answer = new Promise<Answer>((resolve, reject) => {
      waiter.resolve = resolve
      waiter.reject = reject
    })
    this.waiting.set(key, waiter)
    deadline.watch(waiter)
    const timeoutMs = Math.max(1, Math.ceil(deadline.atMs - performance.now()))
    const message = `{"origin":${JSON.stringify(this.self)},"key":${JSON.stringify(key)},"task_id":${JSON.stringify(taskId)},"node_id":${JSON.stringify(client.nodeId)},"timeout_ms":${timeoutMs},"raw_answer":true,${trace === undefined ? '' : traceFields(trace)}"payload":${payloadJson}}`
    // Not awaited: the reply may even come first. What PUBLISH says only ever fails the attempt, so it
    // is read when it comes, and the task goes on meanwhile.
    this.connection.publish(this.keys.relay(holder), message).then(
      (receivers) => {
        // Nobody listening on the holder's channel: it is gone, whatever its presence key still says, and never got the task.
        if (Number(receivers) === 0) this.fail(key, new AttemptError('unreachable', `instance ${holder} is not listening`))
      },
      (error) => {
        // The store may have passed the message on before the failure reached us: lost, not unreachable.
        this.fail(key, new AttemptError('disconnected', `cannot relay to instance ${holder}: ${(error as Error).message}`))
      },
    )
    this.relayed++
    return answer
  }

  /** A reply from a holder (on this instance's reply channel). */
  onReply(text: string): void {
    // Checked whole before it is read: a reply of the wrong shape is dropped, and its waiter fails at its deadline.
    const read = readRelayReply(text)
    if (read === undefined) return
    const { reply, body } = read
    const waiter = this.waiting.get(reply.key)
    if (!waiter) return
    this.waiting.delete(reply.key)
    waiter.deadline.unwatch(waiter)
    if (reply.error !== undefined || reply.status === undefined) {
      waiter.reject(new AttemptError(reply.kind ?? 'disconnected', `via instance ${waiter.instance}: ${reply.error ?? 'no answer'}`, reply.full === true))
      return
    }
    waiter.resolve({
      status: reply.status,
      headers: reply.headers ?? {},
      body: body ?? '',
      instance: waiter.instance,
      ...(reply.retry === false ? { retry: false as const } : {}),
    })
  }

  /** The holder is gone (its presence expired, it withdrew, or the store went down): every attempt relayed to it fails over now. */
  failHolder(instance: string, why: string): void {
    for (const [key, waiter] of [...this.waiting]) {
      if (waiter.instance === instance) this.fail(key, new AttemptError('disconnected', why))
    }
  }

  failAll(why: string): void {
    for (const key of [...this.waiting.keys()]) this.fail(key, new AttemptError('disconnected', why))
  }

  fail(key: string, error: AttemptError): void {
    const waiter = this.waiting.get(key)
    if (!waiter) return
    this.waiting.delete(key)
    waiter.deadline.unwatch(waiter)
    waiter.reject(error)
  }
}

export interface RelayHolderDeps {
  connection: RedisConnection
  keys: ClusterKeys
  registry: Registry
  /** How a task reaches a WebSocket agent of this instance. */
  local: Transport
  deadlines: DeadlineTimer
  /** Where a relayed task waits while the agent's slots are all taken here. */
  slots: SlotQueue
}

/**
 * The holder's side of a relay: a task from another instance goes down the local agent's socket
 * with the time the caller has left, and its answer (or why there is none) goes back to the origin.
 * If the origin died meanwhile, the reply reaches nobody and is gone: nothing accumulates here.
 */
export async function deliverRelayed(deps: RelayHolderDeps, text: string): Promise<void> {
  // Checked whole before it is read: `null` would otherwise be an unhandled rejection, which ends the process.
  const request = readRelayRequest(text)
  if (request === undefined) return
  const payload = memberSpan(text, 'payload')
  const channel = deps.keys.reply(request.origin)
  // Not awaited: a lost reply fails the attempt at the origin (its deadline, or failHolder), never here.
  const reply = (message: string) => void deps.connection.publish(channel, message).catch(() => undefined)
  const failure = (body: RelayReply) => reply(JSON.stringify(body))
  const client = deps.registry.get(request.node_id)
  if (!client || client.instance !== undefined || client.route !== 'ws' || payload.start === -1) {
    // Not sent to the agent at all: the origin may retry it without the task running twice.
    failure({ key: request.key, error: 'the client is no longer connected to this instance', kind: 'unreachable' })
    return
  }
  const deadline = deps.deadlines.start(request.timeout_ms)
  // The holder counts relayed tasks in the agent's slots like its own, and it alone holds the socket:
  // that makes the slots exact across the cluster. A task relayed while the agent is full (the origin
  // had not yet heard so) waits here for the agent's next slot, as a task naming it would.
  let agent = client
  if (hasSlot(client)) deps.registry.acquire(client)
  else {
    const waited = await deps.slots.waitForAgent(client, deadline)
    if (!('acquired' in waited)) {
      deps.deadlines.end(deadline)
      failure({ key: request.key, error: `the agent's slots stayed full here (${waited.kind})`, kind: 'unreachable', full: true })
      return
    }
    agent = waited.client
  }
  try {
    const trace =
      request.traceparent === undefined
        ? undefined
        : { traceparent: request.traceparent, ...(request.tracestate === undefined ? {} : { tracestate: request.tracestate }) }
    const answer = await deps.local.send(agent, request.task_id, text.slice(payload.start, payload.end), deadline, undefined, trace)
    const body = typeof answer.body === 'string' ? answer.body : new TextDecoder().decode(answer.body)
    const envelope: RelayReply = {
      key: request.key,
      status: answer.status,
      headers: answer.headers,
      ...(answer.retry === false ? { retry: false as const } : {}),
    }
    reply(replyText(envelope, body, request.raw_answer === true))
  } catch (error) {
    const kind = error instanceof AttemptError ? error.kind : 'disconnected'
    failure({ key: request.key, error: (error as Error).message, kind })
  } finally {
    deps.registry.release(agent)
    deps.deadlines.end(deadline)
  }
}
