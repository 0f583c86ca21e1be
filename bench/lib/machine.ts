/** What the benchmark ran on: results mean little without it. */
import { cpus, release, totalmem } from 'node:os'

export interface Machine {
  cpu: string
  cores: number
  memory_gib: number
  kernel: string
  bun: string
  nginx: string
  haproxy: string
  wrk: string
}

export function describeMachine(): Machine {
  return {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memory_gib: Math.round(totalmem() / 2 ** 30),
    kernel: release(),
    bun: Bun.version,
    nginx: versionOf(['nginx', '-v'], /nginx\/(\S+)/),
    haproxy: versionOf(['haproxy', '-v'], /version (\S+)/),
    wrk: versionOf(['wrk', '-v'], /wrk (\S+)/),
  }
}

function versionOf(command: string[], pattern: RegExp): string {
  try {
    const result = Bun.spawnSync(command, { stdout: 'pipe', stderr: 'pipe' })
    const text = result.stdout.toString() + result.stderr.toString()
    return pattern.exec(text)?.[1] ?? 'unknown'
  } catch {
    return 'missing'
  }
}
