/** Child processes for the benchmark: spawn, wait for a line, CPU time and RSS from /proc. */

import { readdirSync, readFileSync } from 'node:fs'
import type { Subprocess } from 'bun'

const CLOCK_TICKS_PER_S = 100

export interface Child {
  name: string
  process: Subprocess<'ignore', 'pipe', 'pipe'>
  pid: number
  /** Everything printed so far (stdout and stderr). */
  output: () => string
  /** Resolves with the first match of `pattern` in the output; rejects after `timeoutMs` or on exit. */
  waitFor: (pattern: RegExp, timeoutMs?: number) => Promise<RegExpExecArray>
  stop: () => Promise<void>
}

/** Every child still running, so the runner can stop them all if it has to give up. */
const running = new Set<Subprocess>()

/** Kills every child this process started and has not stopped yet. */
export function killAll(): void {
  for (const child of running) child.kill('SIGKILL')
  running.clear()
}

/** Starts a process with its output collected, so a failure can say what the process printed. */
export function spawnChild(name: string, command: string[], env: Record<string, string | undefined> = {}): Child {
  const child = Bun.spawn(command, { env: { ...process.env, ...env }, stdin: 'ignore', stdout: 'pipe', stderr: 'pipe' })
  running.add(child)
  void child.exited.then(() => running.delete(child))
  let output = ''
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder()
    const reader = stream.getReader()
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      output += decoder.decode(value, { stream: true })
      // Keep the tail only: a chatty child must not grow the runner's memory.
      if (output.length > 200_000) output = output.slice(-100_000)
    }
  }
  void pump(child.stdout)
  void pump(child.stderr)
  const waitFor = async (pattern: RegExp, timeoutMs = 20_000) => {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const match = pattern.exec(output)
      if (match) return match
      if (child.exitCode !== null) throw new Error(`${name} exited (${child.exitCode}) before printing ${pattern}:\n${output.slice(-2000)}`)
      if (Date.now() > deadline) throw new Error(`${name} did not print ${pattern} within ${timeoutMs} ms:\n${output.slice(-2000)}`)
      await Bun.sleep(20)
    }
  }
  const stop = async () => {
    if (child.exitCode !== null) return
    child.kill('SIGTERM')
    const exited = await Promise.race([child.exited.then(() => true), Bun.sleep(3000).then(() => false)])
    if (!exited) {
      child.kill('SIGKILL')
      await child.exited
    }
  }
  return { name, process: child, pid: child.pid, output: () => output, waitFor, stop }
}

/** User + system CPU time of a process (all its threads), in microseconds. */
export function cpuTimeUs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // The command name may contain spaces; fields are counted from after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const utime = Number(fields[11])
  const stime = Number(fields[12])
  return ((utime + stime) * 1_000_000) / CLOCK_TICKS_PER_S
}

/**
 * User + system CPU time of a process's main thread alone, in microseconds: the thread a Bun
 * process runs JavaScript (and every socket of its own) on, the one a saturated proxy is bound by;
 * the JIT, the collector's helpers and fetch's HTTP thread are not counted.
 */
export function mainThreadCpuUs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/task/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return ((Number(fields[11]) + Number(fields[12])) * 1_000_000) / CLOCK_TICKS_PER_S
}

/** CPU µs per thread name (user + system); `name:user` and `name:sys` too. */
export function threadCpu(pid: number): Map<string, number> {
  const byName = new Map<string, number>()
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    let stat: string
    try {
      stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')
    } catch {
      continue
    }
    const name = tid === String(pid) ? 'main' : stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')).replace(/\d+$/, '')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const user = (Number(fields[11]) * 1e6) / 100
    const sys = (Number(fields[12]) * 1e6) / 100
    for (const [key, value] of [
      [name, user + sys],
      [`${name}:user`, user],
      [`${name}:sys`, sys],
    ] as const)
      byName.set(key, (byName.get(key) ?? 0) + value)
  }
  return byName
}

/** Resident set size of a process, in bytes. */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const match = /VmRSS:\s+(\d+) kB/.exec(status)
  return match ? Number(match[1]) * 1024 : 0
}

/** The direct children of a process (nginx's workers under its master). */
export function childPids(pid: number): number[] {
  const found: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
      const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
      if (parent === pid) found.push(Number(entry))
    } catch {
      // The process ended between readdir and read: it is nobody's child any more.
    }
  }
  return found
}

/** The 1-minute load average, recorded with each measurement: other work on the box skews it. */
export function loadAverage(): number {
  return Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0])
}

/** A free TCP port on 127.0.0.1 (bound and released; good enough for a benchmark on loopback). */
export function freePort(): number {
  const server = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
  const port = server.port
  server.stop(true)
  return port
}
