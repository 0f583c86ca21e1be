import type { Clock } from '../clock.ts'
import type { Config, LoadedConfig } from '../config/config.ts'
import { randomToken } from '../config/kept-token.ts'
import { makeSettings, type Settings } from '../config/settings.ts'
import { consoleWrite, createLog, type Log } from '../observe/logger.ts'
import { AuthFailures } from '../security/auth-failures.ts'
import { TaskLoad } from '../tasks/dispatcher.ts'
import { InstanceIdentity } from './identity.ts'

/** What every part of the wiring shares: time, the settings in force, the log and the server's own state. */
export interface ServerContext {
  clock: Clock
  /** The config the server started with: what a reload cannot change is read from here. */
  started: Config
  /** The settings in force, swapped as a whole on reload. */
  settings: Settings
  log: Log
  /** An error that escaped a handler: logged, never thrown further. */
  report: (error: unknown) => void
  /** Failed authentications per address: one table for the server's life, through every reload. */
  authFailures: AuthFailures
  /** The token used while none is configured; the same for the server's life. */
  generatedToken: () => string
  startedAtMs: number
  /** Tasks in flight, and whether the last of the grace period has passed. */
  load: TaskLoad
  identity: InstanceIdentity
  state: {
    stopping: boolean
    /** In a cluster: set once this instance has claimed its id and loaded the others' clients (GET /readyz). */
    joined: boolean
  }
  /** Publishes to a WebSocket topic on every listener; nothing before the server listens. */
  publish: (topic: string, message: string) => void
}

export interface ContextOptions {
  loaded: LoadedConfig
  clock: Clock
  log?: (line: string) => void
  instanceId?: string
  port?: number
  generatedToken?: () => string
}

export function createContext(options: ContextOptions): ServerContext {
  const { clock } = options
  const started = options.loaded.config
  const authFailures = new AuthFailures(() => clock.monotonic())
  // Asked at most once, at start or at the first reload that leaves no token configured.
  let generated: string | undefined
  const generatedToken = () => {
    generated ??= (options.generatedToken ?? randomToken)()
    return generated
  }
  const settings = makeSettings(started, { externalTokens: options.loaded.externalTokens, failures: authFailures, generatedToken })
  // A caller's own sink (tests) gets the messages as they are; otherwise log.format and log.level, as reloaded.
  const given = options.log
  const log: Log = given
    ? (message) => given(message)
    : createLog(
        () => settings.config.log,
        consoleWrite,
        () => clock.now(),
      )
  return {
    clock,
    started,
    settings,
    log,
    // A DOMException's stack is empty: its name and message then.
    report: (error) => log(`[mls] unhandled error: ${(error as Error)?.stack || String(error)}`, { level: 'error' }),
    authFailures,
    generatedToken,
    startedAtMs: clock.now(),
    load: new TaskLoad(),
    identity: new InstanceIdentity(options.instanceId ?? started.cluster?.instance_id, started.cluster?.advertise_url, options.port ?? started.port),
    state: { stopping: false, joined: false },
    publish: () => undefined,
  }
}
