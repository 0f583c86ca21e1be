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

/**
 * The cluster's two connections to Redis: one for commands, one that only listens (a subscribed
 * connection can do nothing else). Bun's own reconnection gives up after a while and queues commands
 * meanwhile; here a lost Redis is noticed at once, commands fail fast (nothing piles up), and the
 * connection is retried with back-off for as long as the server runs.
 */
export class RedisConnection {
  private commands: RedisClient | undefined
  private subscriber: RedisClient | undefined
  private listeners = new Map<string, (message: string) => void>()
  private retryMs = FIRST_RETRY_MS
  private cancelRetry: (() => void) | undefined
  private closed = false
  up = false

  constructor(
    private readonly url: string,
    private readonly clock: Clock,
    private readonly events: RedisConnectionEvents,
  ) {}

  /** Connects; resolves once up (true) or once the first attempt failed (false; retries go on). */
  async start(): Promise<boolean> {
    return this.connect()
  }

  /** A command; throws at once while Redis is down. */
  send(command: string, args: string[]): Promise<unknown> {
    if (!this.up || !this.commands) return Promise.reject(new Error('redis is down'))
    return this.commands.send(command, args)
  }

  publish(channel: string, message: string): Promise<unknown> {
    return this.send('PUBLISH', [channel, message])
  }

  /** Listens on `channel` now and after every reconnection. */
  async subscribe(channel: string, listener: (message: string) => void): Promise<void> {
    this.listeners.set(channel, listener)
    if (this.up && this.subscriber) await this.subscriber.subscribe(channel, (message) => listener(message))
  }

  close(): void {
    this.closed = true
    this.up = false
    this.cancelRetry?.()
    this.drop()
  }

  private async connect(): Promise<boolean> {
    if (this.closed) return false
    const options = { autoReconnect: false, enableOfflineQueue: false, connectionTimeout: 3000 }
    const commands = new RedisClient(this.url, options)
    const subscriber = new RedisClient(this.url, options)
    try {
      await commands.connect()
      await subscriber.connect()
      for (const [channel, listener] of this.listeners) await subscriber.subscribe(channel, (message) => listener(message))
    } catch (error) {
      commands.close()
      subscriber.close()
      this.retryLater(`cannot connect to ${redactRedisUrl(this.url)}: ${(error as Error).message}`)
      return false
    }
    this.commands = commands
    this.subscriber = subscriber
    const lost = (error: Error | undefined) => {
      if (this.commands !== commands) return
      this.drop()
      this.retryLater(`lost the connection to ${redactRedisUrl(this.url)}${error?.message ? `: ${error.message}` : ''}`)
    }
    commands.onclose = lost
    subscriber.onclose = lost
    this.up = true
    this.retryMs = FIRST_RETRY_MS
    try {
      await this.events.up()
    } catch (error) {
      // Redis went away again while the shared view was being rebuilt: the next connection rebuilds it.
      lost(error as Error)
      return false
    }
    return this.up
  }

  private drop(): void {
    const { commands, subscriber } = this
    this.commands = undefined
    this.subscriber = undefined
    if (commands) commands.onclose = null
    if (subscriber) subscriber.onclose = null
    commands?.close()
    subscriber?.close()
  }

  private retryLater(reason: string): void {
    const wasUp = this.up
    this.up = false
    if (this.closed) return
    if (wasUp || this.retryMs === FIRST_RETRY_MS) this.events.down(reason)
    const delayMs = this.retryMs
    this.retryMs = Math.min(MAX_RETRY_MS, this.retryMs * 2)
    this.cancelRetry?.()
    this.cancelRetry = this.clock.after(delayMs, () => void this.connect())
  }
}
