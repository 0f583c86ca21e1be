/**
 * The container image (`npm run image`, scripts/image.ts), built FROM scratch with podman: it serves
 * with its config mounted at /etc/moonlight, runs an agent in a second container that answers a task,
 * reports healthy through `moonlight healthcheck`, and runs as a non-root user.
 *
 * How containers must run on these test machines (not how users run them: docs/operations.md shows
 * the ordinary `docker run -p 8080:8080 …`): Debian's podman only with `--runtime runc`, a
 * containers.conf with `[containers] default_ulimits = []` and `[engine] cgroup_manager = "cgroupfs"`
 * (CONTAINERS_CONF), and `--network host`, since publishing ports (-p) does not work here. So the
 * server binds 127.0.0.1 on a free port of the host.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { BINARY, ensureBinary, FIXTURES } from '../../support/cli.ts'
import { ensureCommand } from '../../support/debian-packages.ts'
import { freePort, postTask, ROOT, TOKEN, waitFor } from '../../support/helpers.ts'

const WHY = 'to build and run the container image'
// A tag and container names of this run only: other runs on the machine share podman's storage.
const RUN = `${process.pid}-${Date.now()}`
const TAG = `localhost/moonlight-test:${RUN}`
const SERVER = `mls-server-${RUN}`
const AGENT = `mls-agent-${RUN}`
const work = mkdtempSync(join(tmpdir(), 'mls-image-'))
const env = { ...process.env, CONTAINERS_CONF: join(work, 'containers.conf') }
let podmanPath = ''

function podman(args: string[]): { code: number; stdout: string; stderr: string } {
  const run = Bun.spawnSync([podmanPath, '--runtime', 'runc', ...args], { env, stdout: 'pipe', stderr: 'pipe' })
  return { code: run.exitCode, stdout: run.stdout.toString().trim(), stderr: run.stderr.toString().trim() }
}

function podmanOk(args: string[]): string {
  const run = podman(args)
  if (run.code !== 0) throw new Error(`podman ${args.join(' ')} failed (${run.code}):\n${run.stderr}`)
  return run.stdout
}

beforeAll(() => {
  podmanPath = ensureCommand('podman', 'podman', WHY)
  ensureCommand('runc', 'runc', WHY)
  writeFileSync(env.CONTAINERS_CONF, '[containers]\ndefault_ulimits = []\n\n[engine]\ncgroup_manager = "cgroupfs"\n')
  // The binary npm test has built, not a second build: what `npm run image` does after building it.
  ensureBinary()
  const build = Bun.spawnSync([process.execPath, join(ROOT, 'scripts/image.ts'), '--tag', TAG, '--binary', BINARY], {
    cwd: ROOT,
    env,
    stdout: 'pipe',
    stderr: 'pipe',
  })
  if (build.exitCode !== 0) throw new Error(`scripts/image.ts failed:\n${build.stdout.toString()}${build.stderr.toString()}`)
}, 240_000)

afterAll(() => {
  if (!podmanPath) return
  podman(['rm', '--force', '--ignore', '--time', '1', SERVER, AGENT])
  podman(['rmi', '--force', TAG])
})

describe('the container image', () => {
  test('FROM scratch and small: the binary as entrypoint, serve by default, a non-root user, a HEALTHCHECK that runs the binary', () => {
    const image = JSON.parse(podmanOk(['image', 'inspect', TAG]))[0]
    expect(image.Config).toMatchObject({
      User: '65532:65532',
      Entrypoint: ['/usr/local/bin/moonlight'],
      Cmd: ['serve'],
    })
    // podman's inspect shows the HEALTHCHECK beside Config; it is kept only in the Docker image format.
    expect(image.Healthcheck).toMatchObject({ Test: ['CMD', '/usr/local/bin/moonlight', 'healthcheck'] })
    expect(image.ManifestType).toBe('application/vnd.docker.distribution.manifest.v2+json')
    // The binary (~100 MB) and the C library, nothing else: the trial image was 113 MB.
    expect(image.Size).toBeLessThan(130_000_000)
  })

  test('serves with the config mounted at /etc/moonlight; an agent container answers a task; healthy; not root', async () => {
    const port = freePort()
    const url = `http://127.0.0.1:${port}`
    const config = mkdtempSync(join(work, 'config-'))
    // Readable by the image's user (mkdtemp makes the directory 0700, root's): otherwise serve sees no file there.
    chmodSync(config, 0o755)
    writeFileSync(join(config, 'mls.json'), readFileSync(join(FIXTURES, 'mls.good.json')))
    // No --config: serve finds /etc/moonlight/mls.json itself. MLS_SERVER points the health check at this port.
    podmanOk([
      'run',
      '--detach',
      '--name',
      SERVER,
      '--network',
      'host',
      '--volume',
      `${config}:/etc/moonlight:ro`,
      '--env',
      `MLS_SERVER=http://localhost:${port}`,
      TAG,
      'serve',
      '--port',
      String(port),
      '--host',
      '127.0.0.1',
    ])
    await waitFor(async () => (await fetch(`${url}/readyz`).catch(() => undefined))?.status === 200, 'the server in the container ready', 30_000)
    expect(podmanOk(['logs', SERVER]) + podman(['logs', SERVER]).stderr).toContain('config: /etc/moonlight/mls.json')

    const agentArgs = [
      'agent',
      '--server',
      url,
      '--token',
      TOKEN,
      '--region',
      'eu-west-1',
      '--node-id',
      'container-agent',
      '--handler',
      '/handler/agent-handler.ts',
    ]
    podmanOk(['run', '--detach', '--name', AGENT, '--network', 'host', '--volume', `${FIXTURES}:/handler:ro`, TAG, ...agentArgs])
    await waitFor(async () => (await (await fetch(`${url}/status`)).json()).clients === 1, 'the agent in its container registered', 30_000)
    const answer = await postTask(url, { region: 'eu-west-1', payload: { double: 21 } })
    expect(answer.status).toBe(200)
    expect(answer.json()).toEqual({ doubled: 42 })
    expect(answer.headers.get('x-moonlight-node')).toBe('container-agent')

    expect(podman(['healthcheck', 'run', SERVER]).code).toBe(0)
    expect(podmanOk(['inspect', SERVER, '--format', '{{.State.Health.Status}}'])).toBe('healthy')
    // The server's process, seen from the host: its real and effective user ids.
    const pid = podmanOk(['inspect', SERVER, '--format', '{{.State.Pid}}'])
    expect(readFileSync(`/proc/${pid}/status`, 'utf8')).toMatch(/^Uid:\s+65532\s+65532\s/m)
  }, 90_000)
})
