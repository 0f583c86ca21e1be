import { RedisClient } from 'bun'
import type { Clock } from '../clock.ts'

/** The Redis URL as it may be shown: a password never appears in a log line, /status or an error. */
export function redactRedisUrl(url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password) parsed.password = '***'
    if (parsed.username && parsed.password === '') parsed.username = '***'
    return parsed.toString()
  } catch {
    return 'redis://(unparsable URL)'
  }
}

export interface RedisConnectionEvents {
  /** Connected (again): the caller subscribes and rebuilds what Redis lost. */
  up: () => void | Promise<void>
  down: (reason: string) => void
}

const FIRST_RETRY_MS = 250
const MAX_RETRY_MS = 5000
/** How often unanswered commands are looked at (more often for a shorter command timeout). */
const WATCH_EVERY_MS = 250

/**
 * The cluster's two connections to Redis: one for commands, one that only listens (a subscribed
 * connection can do nothing else). Bun's own reconnection gives up after a while and queues commands
 * meanwhile; here a lost Redis is noticed at once, commands fail fast (nothing piles up), and the
 * connection is retried with back-off for as long as the server runs. A Redis that hangs (stopped,
 * swapping, stuck in a long script) keeps its sockets open and would hold every caller for as long:
 * a command not answered within `commandTimeoutMs` makes it count as lost, the same way.
 */
export class RedisConnection {
  private commands: RedisClient | undefined
  private subscriber: RedisClient | undefined
  private listeners = new Map<string, (message: string) => void>()
  private retryMs = FIRST_RETRY_MS
  private cancelRetry: (() => void) | undefined
  private cancelWatch: (() => void) | undefined
  /**
   * Commands sent and not yet answered, by sequence number → when sent (monotonic ms). Redis answers a
   * connection's commands in order, so the first entry is the oldest one waiting: one look per check
   * finds a hang, with no timer per command on the task path.
   */
  private readonly unanswered = new Map<number, number>()
  private sequence = 0
  private closed = false
  up = false
  /** Why Redis counts as lost, while it does, without its address: shown by the public /readyz. */
  downReason: string | undefined

  constructor(
    private readonly url: string,
    private readonly clock: Clock,
    private readonly commandTimeoutMs: number,
    private readonly events: RedisConnectionEvents,
  ) {}

  /** Connects; resolves once up (true) or once the first attempt failed (false; retries go on). */
  async start(): Promise<boolean> {
    return this.connect()
  }

  /** A command; throws at once while Redis is down, and within the command timeout if it hangs. */
  send(command: string, args: string[]): Promise<unknown> {
    // Without the reason: this message reaches callers (503 store_unavailable), and the reason names Redis's address.
    if (!this.up || !this.commands) return Promise.reject(new Error('redis is down'))
    const id = ++this.sequence
    this.unanswered.set(id, this.clock.monotonic())
    return this.commands.send(command, args).finally(() => this.unanswered.delete(id))
  }

  publish(channel: string, message: string): Promise<unknown> {
    return this.send('PUBLISH', [channel, message])
  }

  /** Listens on `channel` now and after every reconnection. */
  async subscribe(channel: string, listener: (message: string) => void): Promise<void> {
    this.listeners.set(channel, listener)
    if (this.up && this.subscriber)
      await this.within(
        this.subscriber.subscribe(channel, (message) => listener(message)),
        `SUBSCRIBE ${channel}`,
      )
  }

  close(): void {
    this.closed = true
    this.up = false
    this.cancelRetry?.()
    this.drop()
  }

  private async connect(): Promise<boolean> {
    if (this.closed) return false
    // A Redis that hangs accepts the TCP connection and never answers the handshake: bounded like a command.
    const options = { autoReconnect: false, enableOfflineQueue: false, connectionTimeout: this.commandTimeoutMs }
    const commands = new RedisClient(this.url, options)
    const subscriber = new RedisClient(this.url, options)
    try {
      await commands.connect()
      await subscriber.connect()
      for (const [channel, listener] of this.listeners)
        await this.within(
          subscriber.subscribe(channel, (message) => listener(message)),
          `SUBSCRIBE ${channel}`,
        )
    } catch (error) {
      commands.close()
      subscriber.close()
      this.retryLater(`cannot connect to ${redactRedisUrl(this.url)}: ${(error as Error).message}`, 'it cannot be connected to')
      return false
    }
    this.commands = commands
    this.subscriber = subscriber
    const lost = (reason: string, shownReason: string) => {
      if (this.commands !== commands) return
      this.drop()
      this.retryLater(reason, shownReason)
    }
    const closed = (error: Error | undefined) =>
      lost(`lost the connection to ${redactRedisUrl(this.url)}${error?.message ? `: ${error.message}` : ''}`, 'the connection to it was lost')
    commands.onclose = closed
    subscriber.onclose = closed
    this.up = true
    this.downReason = undefined
    this.retryMs = FIRST_RETRY_MS
    this.cancelWatch = this.clock.every(Math.max(10, Math.min(WATCH_EVERY_MS, this.commandTimeoutMs / 4)), () => {
      if (this.oldestUnansweredMs() > this.commandTimeoutMs) {
        const late = `did not answer within ${this.commandTimeoutMs / 1000} s (cluster.command_timeout)`
        lost(`${redactRedisUrl(this.url)} ${late}`, `it ${late}`)
      }
    })
    try {
      await this.events.up()
    } catch (error) {
      // Redis went away again while the shared view was being rebuilt: the next connection rebuilds it.
      closed(error as Error)
      return false
    }
    return this.up
  }

  /** How long the oldest command still waiting has waited (0 if none). */
  private oldestUnansweredMs(): number {
    for (const sentAtMs of this.unanswered.values()) return this.clock.monotonic() - sentAtMs
    return 0
  }

  /** A subscription as bounded as a command (the subscriber connection answers it, or hangs with Redis). */
  private async within<T>(operation: Promise<T>, what: string): Promise<T> {
    let cancel: (() => void) | undefined
    const timeout = new Promise<never>((_, reject) => {
      cancel = this.clock.after(this.commandTimeoutMs, () => reject(new Error(`no answer to ${what} within ${this.commandTimeoutMs / 1000} s`)))
    })
    try {
      return await Promise.race([operation, timeout])
    } finally {
      cancel?.()
    }
  }

  private drop(): void {
    const { commands, subscriber } = this
    this.cancelWatch?.()
    this.cancelWatch = undefined
    // Closing the clients fails whatever they still wait for; what the old connection sent is no longer watched.
    this.unanswered.clear()
    this.commands = undefined
    this.subscriber = undefined
    if (commands) commands.onclose = null
    if (subscriber) subscriber.onclose = null
    commands?.close()
    subscriber?.close()
  }

  /** `reason` is logged; `shownReason` (no address in it) is what /readyz says. */
  private retryLater(reason: string, shownReason: string): void {
    const wasUp = this.up
    this.up = false
    if (this.closed) return
    if (wasUp || this.retryMs === FIRST_RETRY_MS) {
      this.downReason = shownReason
      this.events.down(reason)
    }
    const delayMs = this.retryMs
    this.retryMs = Math.min(MAX_RETRY_MS, this.retryMs * 2)
    this.cancelRetry?.()
    this.cancelRetry = this.clock.after(delayMs, () => void this.connect())
  }
}
