/**
 * A hostile pass over the clients: what a broken or malicious *remote* server can do to
 * `moonlight task/status/clients/cluster` and to the SDK's createClient/createAgent, and what bad
 * config inputs (mls.json, tokens_file) do to `moonlight config check`. The remote servers here are
 * fakes written with Bun.serve on 127.0.0.1 (they stand for someone else's server, not ours); the CLI
 * runs as a real process and the SDK is the real package source.
 */
import { describe, expect, test } from 'bun:test'
import { testScope } from '../helpers.ts'
import { expectOneLine, runCli } from './cli-helpers.ts'

const { defer } = testScope()

/** A fake remote server on 127.0.0.1, stopped after the test. */
function fakeServer(fetch: (request: Request) => Response | Promise<Response>): string {
  const fake = Bun.serve({ hostname: '127.0.0.1', port: 0, idleTimeout: 0, fetch })
  defer(() => fake.stop(true))
  return `http://127.0.0.1:${fake.port}`
}

/** Accepts the request and never answers. */
const neverAnswers = () => new Promise<Response>(() => {})

/** Answers 200 at once, then sends its body a byte at a time forever: never idle, never done. */
function trickles(): Response {
  let timer: ReturnType<typeof setInterval> | undefined
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      timer = setInterval(() => controller.enqueue(new TextEncoder().encode(' ')), 100)
    },
    cancel() {
      clearInterval(timer)
    },
  })
  return new Response(body, { status: 200, headers: { 'content-type': 'application/json' } })
}

describe('moonlight status, clients and cluster against a server that never finishes answering', () => {
  for (const command of ['status', 'clients', 'cluster']) {
    test(`${command} --timeout gives up on a server that never answers, and on one whose body never ends: exit 1, one line`, async () => {
      for (const answer of [neverAnswers, trickles]) {
        const url = fakeServer(answer)
        const token = command === 'status' ? [] : ['--token', 'sometoken']
        const { code, stderr } = await runCli([command, '--server', url, ...token, '--timeout', '0.5'])
        expect(code).toBe(1)
        expect(expectOneLine(stderr)).toBe(`moonlight ${command}: no answer from ${url} within 0.5 s`)
      }
    })
  }

  test('without --timeout, status gives up after its documented default of 10 s', async () => {
    const url = fakeServer(neverAnswers)
    const { code, stderr } = await runCli(['status', '--server', url])
    expect(code).toBe(1)
    expect(expectOneLine(stderr)).toBe(`moonlight status: no answer from ${url} within 10 s`)
  })

  test('a bad --timeout is bad usage, exit 2', async () => {
    const { code, stderr } = await runCli(['status', '--server', 'http://127.0.0.1:9', '--timeout', 'soon'])
    expect(code).toBe(2)
    expect(expectOneLine(stderr)).toContain('--timeout must be a positive number of seconds')
  })
})
