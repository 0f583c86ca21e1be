import { afterEach, describe, expect, test } from 'bun:test'
import { ROOT, type SpawnedServer, spawnServer, startCli, waitFor } from '../../support/helpers.ts'

const spawned: SpawnedServer[] = []
afterEach(async () => {
  for (const child of spawned.splice(0)) {
    child.process.kill('SIGKILL')
    await child.exited
  }
})

async function spawn(args: string[]): Promise<SpawnedServer> {
  const child = await spawnServer(args)
  spawned.push(child)
  return child
}

describe('start-up', () => {
  test('a second server on a port already in use fails at start-up, saying so, instead of sharing the port', async () => {
    const first = await spawn(['--port', '0', '--host', '0.0.0.0'])
    const port = new URL(first.url).port
    const second = await spawn(['--port', port, '--host', '0.0.0.0'])
    // Bounded: a second server that did start would never exit by itself.
    expect(await Promise.race([second.exited, Bun.sleep(10_000).then(() => 'still running')])).toBe(1)
    expect(second.output()).toContain(`port ${port} is already in use`)
    expect(second.output()).not.toContain('listening on')
    // The first one still has the port to itself.
    expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200)
  })

  test('the server prints its process id, where signals go', async () => {
    const child = await spawn(['--port', '0', '--host', '127.0.0.1'])
    // Printed just after "listening on", which is all spawn waits for: the line may still be on its way.
    await child.waitForOutput(/pid \d+:/)
    expect(child.output()).toContain(`pid ${child.process.pid}`)
  })
})

describe('npm start', () => {
  test('SIGTERM sent to npm reaches the server, which stops instead of living on as an orphan', async () => {
    const npm = startCli(['start', '--', '--port', '0', '--host', '127.0.0.1'], { command: ['npm'] })
    await npm.waitForOutput(/pid (\d+):/)
    const serverPid = Number(/pid (\d+):/.exec(npm.output())![1])
    // npm runs the server itself, no shell in between: the pid it prints is npm's own child.
    expect(serverPid).not.toBe(npm.process.pid)
    npm.kill('SIGTERM')
    await npm.waitForOutput('[mls] stopped')
    await npm.exited
    await waitFor(() => !isAlive(serverPid), 'the server process to end')
  })
})

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

describe('a fresh clone stays clean after npm install', () => {
  test("package-lock.json already holds what npm install writes into it (the root package's bin)", async () => {
    const pkg = await Bun.file(`${ROOT}/package.json`).json()
    const lock = await Bun.file(`${ROOT}/package-lock.json`).json()
    expect(lock.packages[''].bin).toEqual(pkg.bin)
    expect(lock.packages[''].version).toBe(pkg.version)
  })

  test('the bin target is committed executable, as npm makes it', () => {
    const listed = Bun.spawnSync(['git', 'ls-files', '-s', 'src/cli.ts'], { cwd: ROOT }).stdout.toString()
    expect(listed).toStartWith('100755 ')
  })
})
