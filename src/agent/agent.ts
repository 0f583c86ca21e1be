import type { TaskHandler } from './handler.ts'

/** Who an agent says it is, over either transport. */
export interface AgentIdentity {
  /** The servers' http(s) base URLs, without a trailing slash: a cluster's instances, tried in turn. */
  servers: string[]
  token: string
  region: string
  nodeId: string
  weight?: number
  /** The address the server should call (HTTP agents); by default the server uses the source address. */
  ip?: string
  /** A PEM CA bundle an https:// server is verified against (`--ca`); the system's CAs without it. */
  ca?: string
}

export interface AgentOptions extends AgentIdentity {
  handler: TaskHandler
  concurrency: number
  log: (line: string) => void
  warn: (line: string) => void
}

/** Both agents: serve until stopped; `stop` finishes the held tasks first. */
export interface Agent {
  /** Resolves after `stop()` once every held task is answered; rejects with AgentFatalError. */
  run(): Promise<void>
  stop(): Promise<void>
  /** Tasks accepted and not yet answered. */
  readonly held: number
}

/** The server refused this agent (bad token, bad registration): retrying would not help. */
export class AgentFatalError extends Error {
  override name = 'AgentFatalError'
}

/** A sleep that `wake()` cuts short, so a stop does not wait out a reconnect delay. */
export class Pause {
  private wakeUp: (() => void) | undefined

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms)
      this.wakeUp = () => {
        clearTimeout(timer)
        resolve()
      }
    })
  }

  wake(): void {
    this.wakeUp?.()
    this.wakeUp = undefined
  }
}
