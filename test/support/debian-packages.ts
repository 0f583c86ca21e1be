import { execFileSync } from 'node:child_process'

/**
 * A command the tests need, installed from Debian's packages (apt-get, as root) on a machine without
 * it: the tests install what they need rather than skip (test/support/redis.ts does the same for redis-server).
 */
export function ensureCommand(command: string, debianPackage: string, why: string): string {
  const found = Bun.which(command)
  if (found) return found
  if (process.getuid?.() !== 0)
    throw new Error(`${command} is missing (${why}). Install it, then run the tests again:\n  sudo apt-get install -y ${debianPackage}`)
  console.log(`[test] installing Debian ${debianPackage} (${why})…`)
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env })
  execFileSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', debianPackage], { stdio: 'inherit', env })
  const installed = Bun.which(command)
  if (!installed) throw new Error(`apt-get installed ${debianPackage}, but ${command} is not on PATH`)
  return installed
}
