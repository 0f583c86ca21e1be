/**
 * A hostile pass over bytes that are not JSON text, end to end: answers of random bytes (bytes that
 * are not UTF-8, NULs, a BOM, CR/LF mixes, sizes 0, 1, around the answer reader's 64 KiB block and
 * max_answer_bytes) from a real HTTP agent, compared by SHA-256 on every path a caller reads them —
 * sync, async result and view, Idempotency-Key replays, broadcasts, every Content-Encoding the docs
 * accept — and payloads whose bytes are not UTF-8; then `moonlight task` (a real process, stdout a
 * pipe) and the SDK's createClient reading such an answer.
 */
import { describe, expect, test } from 'bun:test'
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib'
import { createClient } from '../../../packages/sdk/src/index.ts'
import { cleanEnv, postTask, SOURCE_CLI, startHttpAgent, type TestServer, TOKEN, testScope } from '../../support/helpers.ts'

const { defer, server } = testScope()
const HEADERS = { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` }
const LIMIT = 200_000

const sha256 = (bytes: Uint8Array) => new Bun.CryptoHasher('sha256').update(bytes).digest('hex')

function randomBytes(length: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(length)
  for (let at = 0; at < length; at += 65_536) crypto.getRandomValues(bytes.subarray(at, Math.min(length, at + 65_536)))
  // Never valid UTF-8 by chance: a lone continuation byte first.
  if (length > 0) bytes[0] = 0x80
  return bytes
}

/** Answer bodies by name: what the agent sends for `{"name": …}`. */
const BODIES: Record<string, Uint8Array<ArrayBuffer>> = {
  empty: new Uint8Array(0),
  'one byte, not UTF-8': new Uint8Array([0xff]),
  'a NUL': new Uint8Array([0x00]),
  'a BOM, then text': new Uint8Array([0xef, 0xbb, 0xbf, 0x41]),
  'CR/LF mixed': new TextEncoder().encode('a\r\nb\nc\rd\r\n\n'),
  'an encoded surrogate (not UTF-8)': new Uint8Array([0xed, 0xa0, 0x80]),
  '1000 random bytes': randomBytes(1000),
  '64 KiB - 1': randomBytes(65_535),
  '64 KiB': randomBytes(65_536),
  '64 KiB + 1': randomBytes(65_537),
  'exactly max_answer_bytes': randomBytes(LIMIT),
}
const OVER = randomBytes(LIMIT + 1)

/** A server with max_answer_bytes LIMIT and one HTTP agent that answers BODIES[payload.name], packed as payload.encoding says. */
async function binaryAgent(): Promise<TestServer> {
  const mls = server({ max_answer_bytes: LIMIT })
  const agent = await startHttpAgent(mls.url, {
    nodeId: 'bytes',
    region: 'usa',
    work: (payload) => {
      const { name, encoding, type } = payload as { name: string; encoding?: string; type?: string }
      const body = name === 'over' ? OVER : BODIES[name]!
      const packed =
        encoding === 'gzip' || encoding === 'x-gzip'
          ? gzipSync(body)
          : encoding === 'deflate'
            ? deflateSync(body)
            : encoding === 'br'
              ? brotliCompressSync(body)
              : body
      const headers: Record<string, string> = { 'content-type': type ?? 'application/octet-stream' }
      if (encoding !== undefined) headers['content-encoding'] = encoding
      return new Response(packed, { headers })
    },
  })
  defer(agent.stop)
  return mls
}

async function call(url: string, path: string, init: RequestInit = {}): Promise<{ status: number; headers: Headers; bytes: Uint8Array }> {
  const response = await fetch(`${url}${path}`, init)
  return { status: response.status, headers: response.headers, bytes: new Uint8Array(await response.arrayBuffer()) }
}

const submit = (url: string, body: unknown, headers: Record<string, string> = {}) =>
  call(url, '/task/request', { method: 'POST', headers: { ...HEADERS, ...headers }, body: JSON.stringify(body) })

describe('binary answers of an HTTP agent reach the caller byte for byte', () => {
  test('sync, with every Content-Encoding the docs accept, and each content type: the same SHA-256, the type kept, no Content-Encoding', async () => {
    const mls = await binaryAgent()
    const wrong: string[] = []
    for (const encoding of [undefined, 'gzip', 'x-gzip', 'deflate', 'br', 'identity'])
      for (const type of ['application/octet-stream', 'image/png', 'text/plain', 'application/json'])
        for (const [name, body] of Object.entries(BODIES)) {
          const answer = await submit(mls.url, { region: 'usa', payload: { name, encoding, type } })
          const seen = `${answer.status} ${sha256(answer.bytes)} ${answer.headers.get('content-type')} ${answer.headers.get('content-encoding')}`
          if (seen !== `200 ${sha256(body)} ${type} null`) wrong.push(`${name} ${type} ${encoding}: ${seen}`)
        }
    expect(wrong).toEqual([])
  }, 30_000)

  test('one byte over max_answer_bytes, plain or packed: 502 answer_too_large as JSON', async () => {
    const mls = await binaryAgent()
    for (const encoding of [undefined, 'gzip', 'br']) {
      const answer = await submit(mls.url, { region: 'usa', payload: { name: 'over', encoding } })
      expect({ encoding, status: answer.status, type: answer.headers.get('content-type') }).toEqual({ encoding, status: 502, type: 'application/json' })
      expect(JSON.parse(new TextDecoder().decode(answer.bytes))).toMatchObject({ code: 'answer_too_large' })
    }
  })

  test('async: the result is the same bytes, and an Idempotency-Key replay of it too', async () => {
    const mls = await binaryAgent()
    const wrong: string[] = []
    for (const [name, body] of Object.entries(BODIES)) {
      const accepted = await submit(mls.url, { region: 'usa', payload: { name, encoding: 'gzip' }, mode: 'async' })
      const { task_id } = JSON.parse(new TextDecoder().decode(accepted.bytes))
      const result = await call(mls.url, `/task/${task_id}/result?wait=10`, { headers: HEADERS })
      if (result.status !== 200 || sha256(result.bytes) !== sha256(body)) wrong.push(`async ${name}: ${result.status} ${result.bytes.length}`)
      for (const round of ['first', 'replay']) {
        const keyed = await submit(mls.url, { region: 'usa', payload: { name } }, { 'idempotency-key': `key-${sha256(body)}` })
        const replayed = keyed.headers.get('idempotent-replayed')
        if (keyed.status !== 200 || sha256(keyed.bytes) !== sha256(body) || (round === 'replay') !== (replayed === 'true'))
          wrong.push(`keyed ${round} ${name}: ${keyed.status} ${keyed.bytes.length} ${replayed}`)
      }
    }
    expect(wrong).toEqual([])
  }, 30_000)

  test('GET /task/{id}: bytes that are not UTF-8 as {base64}, text as it is — a BOM and a NUL kept', async () => {
    const mls = await binaryAgent()
    const views: Record<string, unknown> = {}
    for (const name of ['a BOM, then text', 'a NUL', 'CR/LF mixed', '1000 random bytes', 'empty']) {
      const accepted = await submit(mls.url, { region: 'usa', payload: { name, type: 'text/plain' }, mode: 'async' })
      const { task_id } = JSON.parse(new TextDecoder().decode(accepted.bytes))
      await call(mls.url, `/task/${task_id}/result?wait=10`, { headers: HEADERS })
      views[name] = (await (await fetch(`${mls.url}/task/${task_id}`, { headers: HEADERS })).json()).response
    }
    expect(views).toEqual({
      'a BOM, then text': '\ufeffA',
      'a NUL': '\u0000',
      'CR/LF mixed': 'a\r\nb\nc\rd\r\n\n',
      '1000 random bytes': { base64: Buffer.from(BODIES['1000 random bytes']!).toString('base64') },
      empty: '',
    })
  })

  test('a broadcast part carries bytes that are not UTF-8 as {base64} (as GET /task/{id} does), and text as it is', async () => {
    const mls = await binaryAgent()
    const parts: Record<string, unknown> = {}
    for (const [name, type] of [
      ['1000 random bytes', 'image/png'],
      ['an encoded surrogate (not UTF-8)', 'application/json'],
      ['one byte, not UTF-8', 'text/plain'],
      ['a BOM, then text', 'text/plain'],
      ['a NUL', 'application/octet-stream'],
    ] as const) {
      const reply = await postTask(mls.url, { region: 'usa', payload: { name, type }, mode: 'broadcast' })
      expect(reply.status).toBe(200)
      parts[name] = reply.json().results[0].response
    }
    const base64 = (name: string) => ({ base64: Buffer.from(BODIES[name]!).toString('base64') })
    expect(parts).toEqual({
      '1000 random bytes': base64('1000 random bytes'),
      'an encoded surrogate (not UTF-8)': base64('an encoded surrogate (not UTF-8)'),
      'one byte, not UTF-8': base64('one byte, not UTF-8'),
      'a BOM, then text': '\ufeffA',
      'a NUL': '\u0000',
    })
  })
})

describe('a payload whose bytes are not UTF-8', () => {
  // Not JSON (RFC 8259 §8.1: JSON text exchanged between systems is UTF-8): passed on, each bad byte would reach the agent as U+FFFD.
  const prefix = new TextEncoder().encode('{"region":"usa","payload":"')
  const suffix = new TextEncoder().encode('"}')
  const CASES: Record<string, number[]> = {
    'a lone 0xff': [0xff, 0x41],
    'an encoded surrogate': [0xed, 0xa0, 0x80],
    'a Latin-1 é': [0x63, 0x61, 0x66, 0xe9],
  }
  // Read by Request.text, one U+FFFD of three bytes stands for these three: only a chunked body, whose bytes the server reads itself, shows it.
  const CUT_SHORT: Record<string, number[]> = { 'a four-byte sequence cut short': [0xf0, 0x9f, 0x98, 0x41] }

  for (const chunked of [false, true])
    test(`is 400 invalid_json, never passed on altered (${chunked ? 'chunked' : 'declared length'})`, async () => {
      const mls = server()
      const received: string[] = []
      const agent = await startHttpAgent(mls.url, {
        nodeId: 'h',
        region: 'usa',
        work: async (payload) => {
          received.push(JSON.stringify(payload))
          return Response.json({ ok: true })
        },
      })
      defer(agent.stop)
      const answers: Record<string, unknown> = {}
      const cases = chunked ? { ...CASES, ...CUT_SHORT } : CASES
      for (const [what, bytes] of Object.entries(cases)) {
        const body = Buffer.concat([prefix, Uint8Array.from(bytes), suffix])
        const response = await fetch(`${mls.url}/task/request`, {
          method: 'POST',
          headers: HEADERS,
          body: chunked
            ? new ReadableStream({
                start(controller) {
                  controller.enqueue(body)
                  controller.close()
                },
              })
            : body,
        })
        answers[what] = [response.status, await response.json()]
      }
      const refused = [400, { error: 'request body is not valid JSON: it is not UTF-8', code: 'invalid_json' }]
      expect(answers).toEqual(Object.fromEntries(Object.keys(cases).map((what) => [what, refused])))
      expect(received).toEqual([])
      // Genuine U+FFFD, a BOM and a NUL escape are UTF-8 JSON: passed on byte for byte.
      const fine = '{"region":"usa","payload":"\ufffd \ufeff \\u0000 ☃"}'
      const ok = await fetch(`${mls.url}/task/request`, { method: 'POST', headers: HEADERS, body: new TextEncoder().encode(fine) })
      expect(ok.status).toBe(200)
      expect(received).toEqual([JSON.stringify('\ufffd \ufeff \u0000 ☃')])
    })
})

describe('the clients read a binary answer as its bytes', () => {
  test('moonlight task, piped, writes exactly the bytes the agent answered (sync and task get)', async () => {
    const mls = await binaryAgent()
    const run = async (args: string[]) => {
      const child = Bun.spawn([...SOURCE_CLI, ...args, '--server', mls.url, '--token', TOKEN], {
        env: cleanEnv(),
        stdin: 'ignore',
        stdout: 'pipe',
        stderr: 'pipe',
      })
      const [stdout, stderr, code] = await Promise.all([new Response(child.stdout).bytes(), new Response(child.stderr).text(), child.exited])
      return { code, stderr, sha: sha256(stdout), length: stdout.length }
    }
    const body = BODIES['1000 random bytes']!
    const expected = { code: 0, stderr: '', sha: sha256(body), length: body.length }
    expect(await run(['task', '--region', 'usa', '--payload', '{"name":"1000 random bytes","type":"image/png"}'])).toEqual(expected)
    const accepted = await submit(mls.url, { region: 'usa', payload: { name: '1000 random bytes' }, mode: 'async' })
    const { task_id } = JSON.parse(new TextDecoder().decode(accepted.bytes))
    expect(await run(['task', 'get', task_id, '--wait', '10'])).toEqual(expected)
    const bom = BODIES['a BOM, then text']!
    expect(await run(['task', '--region', 'usa', '--payload', '{"name":"a BOM, then text","type":"text/plain"}'])).toEqual({
      code: 0,
      stderr: '',
      sha: sha256(bom),
      length: bom.length,
    })
  })

  test("the SDK's task() and result() give bytes that are not UTF-8 as a Uint8Array, and text (a BOM kept) as a string", async () => {
    const mls = await binaryAgent()
    const moonlight = createClient({ server: mls.url, token: TOKEN })
    const body = BODIES['1000 random bytes']!
    const sync = await moonlight.task<Uint8Array>('usa', { name: '1000 random bytes', type: 'image/png' })
    expect(sync.body).toBeInstanceOf(Uint8Array)
    expect(sha256(sync.body)).toBe(sha256(body))
    const id = await moonlight.submit('usa', { name: '64 KiB + 1' })
    const stored = await moonlight.result<Uint8Array>(id, { wait: 10 })
    expect(sha256(stored!.body)).toBe(sha256(BODIES['64 KiB + 1']!))
    expect((await moonlight.task('usa', { name: 'a BOM, then text', type: 'text/plain' })).body).toBe('\ufeffA')
    expect((await moonlight.task('usa', { name: 'empty', type: 'application/json' })).body).toBe(null)
  })
})
