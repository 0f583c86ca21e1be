import type { Client, Registry } from '../fleet/registry.ts'
import { hasSlot } from '../fleet/slots.ts'
import type { TraceHeaders } from '../observe/tracing/trace-context.ts'
import type { Deadline, DeadlineTimer, Expirable } from '../tasks/deadlines.ts'
import type { Queueing } from '../tasks/routing.ts'
import type { SlotQueue } from '../tasks/slot-waiting.ts'
import { TurnBatches } from '../transports/turn-batches.ts'
import { type Answer, AttemptError, type Transport, timedOut } from '../transports/types.ts'
import { memberSpan } from '../wire/json-text.ts'
import { traceFields } from '../wire/ws.ts'
import type { ClusterKeys } from './keys.ts'
import { type InstanceInfo, type RelayReply, readRelayReply, readRelayRequest, relayMembers, relayMessages, replyText } from './messages.ts'
import type { RedisConnection } from './redis-connection.ts'
import { dropSpilled, SPILL_OVER_CHARS, spill, unspill } from './spill.ts'

/** One relayed attempt waiting for its reply; fails over at once if its holder goes away. */
class RelayWaiter implements Expirable {
  resolve!: (answer: Answer) => void
  reject!: (error: AttemptError) => void

  constructor(
    private readonly transport: RelayTransport,
    readonly key: string,
    readonly line: HolderLine,
    readonly deadline: Deadline,
    /** What the message is made of: kept until it is written (at once, or at the end of the turn). */
    readonly taskId: string,
    readonly nodeId: string,
    readonly payloadJson: string,
    readonly trace: TraceHeaders | undefined,
    /** Its class and bound for a wait at the holder, should the agent's slots all be taken there. */
    readonly queueing: Queueing | undefined,
  ) {}

  get instance(): string {
    return this.line.instance
  }

  expire(): void {
    this.transport.fail(this.key, timedOut())
  }
}

/**
 * A task's priority and queue_timeout as fields of its relay message (each a name of the schema's, or
 * a whole number of ms): the holder queues it by them if the agent is full there. The queue_timeout is
 * held to the time the task has left (`leftMs`): the API bounds it by nothing else, and a number past
 * 2^53 would make the holder refuse the message. None for a task without them (nearly all). A holder
 * of an earlier version ignores them.
 */
function queueingFields({ priority, queueTimeoutMs }: Queueing, leftMs: number): string {
  let fields = priority === undefined || priority === 'normal' ? '' : `"priority":"${priority}",`
  if (queueTimeoutMs !== undefined) fields += `"queue_timeout_ms":${Math.max(1, Math.ceil(Math.min(queueTimeoutMs, leftMs)))},`
  return fields
}

/** The attempts relayed to one holder: how many wait for a reply, and those not yet published this turn. */
class HolderLine {
  inFlight = 0
  readonly queue: RelayWaiter[] = []

  constructor(readonly instance: string) {}
}

/**
 * Tasks for WebSocket agents held by another instance: published on the holder's relay channel,
 * sent down the agent's socket there, and answered on this instance's reply channel. The payload
 * and the answer travel as their own text. A holder that dies fails its relayed attempts at once
 * (failHolder), like a WebSocket disconnect, and a reply nobody waits for any more is dropped.
 *
 * Each relayed task costs Redis a PUBLISH and a delivery each way, and the two instances a message
 * each: that, not the bytes, is most of its price. So the tasks for one holder that reads batches
 * (it says so in its presence) gathered during one event-loop turn go as one message (relayBatch),
 * as the WebSocket transport's outbox does for a socket; a task to a holder with nothing else in
 * flight goes at once, alone, as before (at low load, every task).
 */
export class RelayTransport implements Transport {
  private readonly waiting = new Map<string, RelayWaiter>()
  /** Probes (see probe) waiting for their holder's word, by key. */
  private readonly probes = new Map<string, (alive: boolean) => void>()
  private readonly lines = new Map<string, HolderLine>()
  private readonly turn = new TurnBatches<HolderLine>((line) => this.flush(line))
  private sequence = 0
  /**
   * This process's own mark in every relay key: an instance restarted under the same id starts its
   * sequence at 0 again and listens on the same reply channel, so without it a late answer to the
   * previous run's task would settle this run's task of the same number — another caller's answer.
   * 32 random bits, in at most 7 characters: it travels in every request and reply.
   */
  private readonly run = crypto.getRandomValues(new Uint32Array(1))[0]!.toString(36)
  relayed = 0
  /** Redis messages that carried relayed tasks (a batch counts once). */
  published = 0

  constructor(
    private readonly connection: RedisConnection,
    private readonly keys: ClusterKeys,
    /** This instance's id, read when a task is relayed (it is settled only once the server listens). */
    private readonly selfId: () => string,
    /** What `instance`'s presence says (whether it reads relay batches), as last read. */
    private readonly holderInfo: (instance: string) => Pick<InstanceInfo, 'relay_batch'> | undefined = () => undefined,
    /** Whether the holders may answer this instance in batches (cluster.relay_batch). */
    private readonly askBatchReplies = false,
  ) {}

  private get self(): string {
    return this.selfId()
  }

  get pending(): number {
    return this.waiting.size
  }

  send(
    client: Client,
    taskId: string,
    payloadJson: string,
    deadline: Deadline,
    _mayResend?: boolean,
    trace?: TraceHeaders,
    queueing?: Queueing,
  ): Promise<Answer> {
    if (deadline.expired) return Promise.reject(timedOut())
    const holder = client.instance
    if (holder === undefined || !this.connection.up)
      return Promise.reject(new AttemptError('unreachable', `cannot reach instance ${holder ?? '?'}: the cluster store is down`))
    const key = this.nextKey()
    let line = this.lines.get(holder)
    if (line === undefined) {
      line = new HolderLine(holder)
      this.lines.set(holder, line)
    }
    const waiter = new RelayWaiter(this, key, line, deadline, taskId, client.nodeId, payloadJson, trace, queueing)
    const answer = new Promise<Answer>((resolve, reject) => {
      waiter.resolve = resolve
      waiter.reject = reject
    })
    this.waiting.set(key, waiter)
    line.inFlight++
    deadline.watch(waiter)
    this.relayed++
    // Nothing else in flight to this holder, or it does not read batches: nothing to share a message with.
    // Known from its presence only: a newcomer heard of on the fleet channel gets single messages until the next tick reads it.
    if ((line.inFlight === 1 && line.queue.length === 0) || !this.askBatchReplies || this.holderInfo(holder)?.relay_batch !== true) {
      this.publish(line, this.requestText(waiter), [waiter])
      return answer
    }
    if (line.queue.length === 0) this.turn.add(line)
    line.queue.push(waiter)
    return answer
  }

  /** A relayed task's own message, with the time its caller has left now. */
  private requestText(waiter: RelayWaiter): string {
    const { deadline, trace, queueing } = waiter
    const timeoutMs = Math.max(1, Math.ceil(deadline.atMs - performance.now()))
    return `{"origin":${JSON.stringify(this.self)},"key":${JSON.stringify(waiter.key)},"task_id":${JSON.stringify(waiter.taskId)},"node_id":${JSON.stringify(waiter.nodeId)},"timeout_ms":${timeoutMs},"raw_answer":true,"answer_ref":true,${this.askBatchReplies ? '"batch_replies":true,' : ''}${trace === undefined ? '' : traceFields(trace)}${queueing === undefined ? '' : queueingFields(queueing, timeoutMs)}"payload":${waiter.payloadJson}}`
  }

  /** Publishes the tasks a holder was given this turn: one message. */
  private flush(line: HolderLine): void {
    const { queue } = line
    // Settled meanwhile (timed out, failed over with their holder): not sent at all.
    const live = queue.filter((waiter) => this.waiting.get(waiter.key) === waiter)
    queue.length = 0
    if (live.length === 1) this.publish(line, this.requestText(live[0]!), live)
    else if (live.length > 1)
      for (const { text, from, to } of relayMessages(live.map((waiter) => this.requestText(waiter)))) this.publish(line, text, live.slice(from, to))
  }

  private publish(line: HolderLine, message: string, waiters: readonly RelayWaiter[]): void {
    const holder = line.instance
    this.published++
    // Not awaited: the reply may even come first. What PUBLISH says only ever fails the attempts, so it
    // is read when it comes, and the tasks go on meanwhile.
    this.connection.publish(this.keys.relay(holder), message).then(
      (receivers) => {
        // Nobody listening on the holder's channel: it is gone, whatever its presence key still says, and never got the tasks.
        if (Number(receivers) === 0) for (const waiter of waiters) this.fail(waiter.key, new AttemptError('unreachable', `instance ${holder} is not listening`))
      },
      (error) => {
        // The store may have passed the message on before the failure reached us: lost, not unreachable.
        for (const waiter of waiters) this.fail(waiter.key, new AttemptError('disconnected', `cannot relay to instance ${holder}: ${(error as Error).message}`))
      },
    )
  }

  /** A message on this instance's reply channel: one reply, or a holder's batch of them. */
  onMessage(text: string): void {
    for (const member of relayMembers(text)) this.onReply(member)
  }

  /** A reply from a holder (on this instance's reply channel). */
  onReply(text: string): void {
    // Checked whole before it is read: a reply of the wrong shape is dropped, and its waiter fails at its deadline.
    const read = readRelayReply(text)
    if (read === undefined) return
    const { reply, body } = read
    const waiter = this.waiting.get(reply.key)
    // Only the key of this attempt's own answer: a peer's reply never makes this instance read or delete another key.
    const spilled = reply.body_ref !== undefined && reply.body_ref === this.keys.spilled(reply.key) ? reply.body_ref : undefined
    if (!waiter) {
      if (spilled !== undefined) dropSpilled(this.connection, spilled)
      this.probes.get(reply.key)?.(reply.status === 200)
      return
    }
    if (reply.body_ref !== undefined && reply.status !== undefined) {
      if (spilled === undefined) this.fail(reply.key, new AttemptError('invalid_answer', `via instance ${waiter.instance}: the answer names a key not its own`))
      else this.readSpilled(waiter, reply, spilled, reply.body_parts ?? 1)
      return
    }
    this.settle(waiter)
    if (reply.error !== undefined || reply.status === undefined) {
      waiter.reject(new AttemptError(reply.kind ?? 'disconnected', `via instance ${waiter.instance}: ${reply.error ?? 'no answer'}`, reply.full === true))
      return
    }
    waiter.resolve(answerOf(waiter, reply, body ?? ''))
  }

  /** A large answer's body, from the list its holder set (the reply named it); the attempt waits for it as for the reply. */
  private readSpilled(waiter: RelayWaiter, reply: RelayReply, ref: string, parts: number): void {
    const lost = (why: string) => this.fail(waiter.key, new AttemptError('disconnected', `via instance ${waiter.instance}: ${why}`))
    unspill(this.connection, ref, parts).then(
      (body) => {
        // Settled meanwhile (its deadline, its holder gone): the body is dropped, as a late reply is.
        if (this.waiting.get(waiter.key) !== waiter) return
        if (body === undefined) return lost('the answer was gone from the cluster store before it was read')
        this.settle(waiter)
        waiter.resolve(answerOf(waiter, reply, body))
      },
      (error: Error) => lost(`the answer could not be read from the cluster store: ${error.message}`),
    )
  }

  /** A relay key of this process: the instance, this run's mark, a number. */
  private nextKey(): string {
    return `${this.self}/${this.run}.${++this.sequence}`
  }

  /** The instances that tasks relayed from here still wait on. */
  waitedOn(): IterableIterator<string> {
    // A line lives while something relayed to its holder waits (settle forgets it after).
    return this.lines.keys()
  }

  /**
   * Whether the WebSocket agent `nodeId` that `holder` holds still answers there: asked of the holder,
   * which pings it. False if the holder says not, or does not answer within `timeoutMs`.
   */
  probe(holder: string, nodeId: string, timeoutMs: number): Promise<boolean> {
    if (!this.connection.up) return Promise.resolve(false)
    const key = this.nextKey()
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => done(false), timeoutMs)
      const done = (alive: boolean) => {
        if (!this.probes.delete(key)) return
        clearTimeout(timer)
        resolve(alive)
      }
      this.probes.set(key, done)
      const message = JSON.stringify({ origin: this.self, key, task_id: '', node_id: nodeId, timeout_ms: timeoutMs, probe: true })
      this.connection.publish(this.keys.relay(holder), message).then(
        (receivers) => Number(receivers) === 0 && done(false),
        () => done(false),
      )
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
    this.settle(waiter)
    waiter.reject(error)
  }

  private settle(waiter: RelayWaiter): void {
    this.waiting.delete(waiter.key)
    waiter.deadline.unwatch(waiter)
    const { line } = waiter
    // A holder with nothing in flight is forgotten: the lines follow the live holders, not every one ever seen.
    if (--line.inFlight === 0 && line.queue.length === 0 && this.lines.get(line.instance) === line) this.lines.delete(line.instance)
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
  /** How answers go back to the origins that read them in batches. */
  replies: RelayReplies
  /** cluster.relay_batch here: off, every answer is its own message, whatever the origin asked (as an older version does). */
  batches: boolean
  /**
   * Each delivery under way here, by its relay key (one per attempt: a broadcast relays one task id to
   * several agents here): a cancel ends those of its task (Cluster.cancelDelivery), a stop waits for all.
   */
  deliveries: Map<string, { taskId: string; deadline: Deadline }>
  /** Whether the WebSocket agent held here still answers (the gateway's ping), for a probe. */
  isAlive: (nodeId: string) => Promise<boolean>
}

/** The answers owed to one origin that reads batches: how many are still being worked on here, and those ready this turn. */
class OriginLine {
  inFlight = 0
  readonly queue: string[] = []

  constructor(
    readonly origin: string,
    readonly channel: string,
  ) {}
}

/**
 * The holder's side of the batching (see RelayTransport): the replies to one origin ready during one
 * event-loop turn go back as one message; a reply with no other task of that origin being worked on
 * here goes at once, alone. Only for origins that asked (`batch_replies`): an older one reads one
 * reply per message.
 */
export class RelayReplies {
  private readonly origins = new Map<string, OriginLine>()
  private readonly turn = new TurnBatches<OriginLine>((line) => this.flush(line))
  /** Redis messages that carried replies (a batch counts once). */
  published = 0

  constructor(
    private readonly connection: RedisConnection,
    private readonly keys: ClusterKeys,
  ) {}

  /** A task from `origin` is being worked on here: exactly one send for it follows. */
  expect(origin: string): void {
    let line = this.origins.get(origin)
    if (line === undefined) {
      line = new OriginLine(origin, this.keys.reply(origin))
      this.origins.set(origin, line)
    }
    line.inFlight++
  }

  send(origin: string, message: string): void {
    const line = this.origins.get(origin)!
    line.inFlight--
    if (line.inFlight === 0 && line.queue.length === 0) {
      this.origins.delete(origin)
      this.publish(line.channel, message)
      return
    }
    if (line.queue.length === 0) this.turn.add(line)
    line.queue.push(message)
  }

  /** A reply to an origin that reads one per message. */
  alone(origin: string, message: string): void {
    this.publish(this.keys.reply(origin), message)
  }

  private flush(line: OriginLine): void {
    const { queue } = line
    for (const { text } of relayMessages(queue)) this.publish(line.channel, text)
    queue.length = 0
    if (line.inFlight === 0 && this.origins.get(line.origin) === line) this.origins.delete(line.origin)
  }

  private publish(channel: string, message: string): void {
    this.published++
    // Not awaited: a lost reply fails the attempts at the origin (their deadlines, or failHolder), never here.
    void this.connection.publish(channel, message).catch(() => undefined)
  }
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
  const { origin } = request
  // An origin that reads batches gets its reply with the others ready in the same turn (exactly one per task).
  const batched = deps.batches && request.batch_replies === true
  if (batched) deps.replies.expect(origin)
  const reply = batched ? (message: string) => deps.replies.send(origin, message) : (message: string) => deps.replies.alone(origin, message)
  const failure = (body: RelayReply) => reply(JSON.stringify(body))
  const client = deps.registry.get(request.node_id)
  if (request.probe === true) {
    const alive = client !== undefined && client.instance === undefined && client.route === 'ws' && (await deps.isAlive(request.node_id))
    failure(alive ? { key: request.key, status: 200 } : { key: request.key, error: 'the client does not answer here', kind: 'unreachable' })
    return
  }
  if (!client || client.instance !== undefined || client.route !== 'ws' || payload.start === -1) {
    // Not sent to the agent at all: the origin may retry it without the task running twice.
    failure({ key: request.key, error: 'the client is no longer connected to this instance', kind: 'unreachable' })
    return
  }
  const deadline = deps.deadlines.start(request.timeout_ms)
  deps.deliveries.set(request.key, { taskId: request.task_id, deadline })
  // The holder counts relayed tasks in the agent's slots like its own, and it alone holds the socket:
  // that makes the slots exact across the cluster. A task relayed while the agent is full (the origin
  // had not yet heard so) waits here for the agent's next slot, as a task naming it would.
  let agent = client
  if (hasSlot(client)) deps.registry.acquire(client)
  else {
    const waited = await deps.slots.waitForAgent(client, deadline, { priority: request.priority, queueTimeoutMs: request.queue_timeout_ms })
    if (!('acquired' in waited)) {
      deliveryEnded(deps, request.key, deadline)
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
    // A large body goes by a key of its own, read by the origin once: a pub/sub message that large (or
    // many together) would make Redis cut the origin's subscriber, failing all it relays.
    if (request.answer_ref === true && body.length > SPILL_OVER_CHARS) {
      const ref = deps.keys.spilled(request.key)
      envelope.body_parts = await spill(deps.connection, ref, body)
      envelope.body_ref = ref
      reply(replyText(envelope, '', request.raw_answer === true))
    } else reply(replyText(envelope, body, request.raw_answer === true))
  } catch (error) {
    const kind = error instanceof AttemptError ? error.kind : 'disconnected'
    failure({ key: request.key, error: (error as Error).message, kind })
  } finally {
    deps.registry.release(agent)
    deliveryEnded(deps, request.key, deadline)
  }
}

function deliveryEnded(deps: RelayHolderDeps, key: string, deadline: Deadline): void {
  deps.deadlines.end(deadline)
  deps.deliveries.delete(key)
}

/** A relayed answer as the attempt's Answer. */
function answerOf(waiter: RelayWaiter, reply: RelayReply, body: string): Answer {
  return { status: reply.status!, headers: reply.headers ?? {}, body, instance: waiter.instance, ...(reply.retry === false ? { retry: false as const } : {}) }
}
