/**
 * Hostile and broken HTTP agents against the server's own HTTP/1.1 client (src/transports/http-client/,
 * src/transports/http.ts): a real server, raw TCP agents that write whatever bytes a test wants, real
 * callers. Each test asserts what the caller gets and that the agent's pool is left with nothing busy.
 */
import { describe, expect, test } from 'bun:test'
import net from 'node:net'
import zlib from 'node:zlib'
import type { Socket } from 'bun'
import { postTask, TOKEN, testScope } from '../../support/helpers.ts'
import { expectPoolsSettled, heartbeat, poolFigures, type RawSocket, rawHttpAgents } from '../../support/raw-http-agent.ts'

const { defer, server } = testScope()

const rawAgent = rawHttpAgents(defer)

/** An answer whose body is `text`, with a declared length. */
function answer(text: string, headers = ''): string {
  return `HTTP/1.1 200 OK\r\n${headers}Content-Length: ${Buffer.byteLength(text, 'latin1')}\r\n\r\n${text}`
}

describe('hostile HTTP agents: defects found', () => {
  test('a second whole answer in the same packet is not merged into the first', async () => {
    const mls = server({ retry_count: 0 })
    const agent = await rawAgent(mls.url, (socket, request) => {
      // Answered twice at once: the second answer was never asked for.
      socket.write(`${answer(request.taskId)}HTTP/1.1 500 Oops\r\nContent-Length: 3\r\n\r\nbad`)
    })
    const first = await postTask(mls.url, { region: 'usa', payload: 1 })
    expect(first.status).toBe(200)
    expect(first.text).toBe(first.headers.get('x-task-id')!)
    // The connection that carried unasked bytes is not trusted with the next task.
    const second = await postTask(mls.url, { region: 'usa', payload: 2 })
    expect(second.status).toBe(200)
    expect(second.text).toBe(second.headers.get('x-task-id')!)
    expect(agent.connections()).toBe(2)
    await expectPoolsSettled(mls.url)
  })

  test('answers pipelined in one packet cannot add up past max_answer_bytes', async () => {
    const limit = 1000
    const mls = server({ retry_count: 0, max_answer_bytes: limit })
    await rawAgent(mls.url, (socket) => {
      // Each answer alone is within the limit; together they are three times it.
      socket.write(answer('a'.repeat(limit)) + answer('b'.repeat(limit)) + answer('c'.repeat(limit)))
    })
    const result = await postTask(mls.url, { region: 'usa', payload: 1 })
    expect(result.status).toBe(200)
    expect({ length: result.text.length, bytes: [...new Set(result.text)] }).toEqual({ length: limit, bytes: ['a'] })
    await expectPoolsSettled(mls.url)
  })

  test('an agent that answers before reading the whole request: the rest is not lost, and the next task is not eaten as its body', async () => {
    const mls = server({ retry_count: 0, task_timeout: 5, max_body_bytes: 64 * 1024 * 1024 })
    // node:net, for pause(): the agent answers at the head, then reads no more for a while, so the
    // server has most of the payload still to write when the answer has come.
    const seen: string[] = []
    const agent = net.createServer((socket) => {
      let buffered = Buffer.alloc(0)
      let bodyLeft = 0
      let first = true
      socket.on('data', (data: Buffer) => {
        buffered = Buffer.concat([buffered, data])
        for (;;) {
          const skipped = Math.min(bodyLeft, buffered.length)
          bodyLeft -= skipped
          buffered = buffered.subarray(skipped)
          if (bodyLeft > 0) return
          const end = buffered.indexOf('\r\n\r\n')
          if (end === -1) return
          const head = buffered.subarray(0, end).toString('latin1')
          const taskId = /x-task-id: (\S+)/i.exec(head)?.[1] ?? `not a request head: ${JSON.stringify(head.slice(0, 40))}`
          seen.push(taskId)
          bodyLeft = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0)
          buffered = buffered.subarray(end + 4)
          socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${taskId.length}\r\n\r\n${taskId}`)
          if (first) {
            first = false
            socket.pause()
            setTimeout(() => socket.resume(), 300)
          }
        }
      })
    })
    await new Promise<void>((resolve) => agent.listen(0, '127.0.0.1', resolve))
    defer(() => agent.close())
    await heartbeat(mls.url, 'early', (agent.address() as net.AddressInfo).port)
    const big = await postTask(mls.url, { region: 'usa', payload: 'x'.repeat(16 * 1024 * 1024) })
    expect(big.status).toBe(200)
    expect(big.text).toBe(big.headers.get('x-task-id')!)
    const next = await postTask(mls.url, { region: 'usa', payload: 'small' })
    expect(next.status).toBe(200)
    expect(next.text).toBe(next.headers.get('x-task-id')!)
    expect(seen).toEqual([big.headers.get('x-task-id')!, next.headers.get('x-task-id')!])
    await expectPoolsSettled(mls.url)
  }, 20_000)

  test("bytes that come on an idle connection are never taken as the next task's answer", async () => {
    const mls = server({ retry_count: 0, task_timeout: 5 })
    let answered = 0
    await rawAgent(mls.url, (socket, request) => {
      if (answered++ === 0) {
        socket.write(answer(request.taskId))
        // A late, second answer to the same task, in two pieces: its head while the connection sits idle,
        // its body after the next task went out.
        setTimeout(() => socket.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n'), 20)
        setTimeout(() => socket.write('\r\nstale'), 200)
      } else setTimeout(() => socket.write(answer(request.taskId)), 300)
    })
    const first = await postTask(mls.url, { region: 'usa', payload: 1 })
    expect(first.text).toBe(first.headers.get('x-task-id')!)
    await Bun.sleep(100)
    const second = await postTask(mls.url, { region: 'usa', payload: 2 })
    expect(second.status).toBe(200)
    expect(second.text).toBe(second.headers.get('x-task-id')!)
    await expectPoolsSettled(mls.url)
  })

  test('a NUL, a bare CR or a bare LF in a header is refused as an invalid answer, not a 500 from the server', async () => {
    const mls = server({ retry_count: 0 })
    const heads = ['X-Evil: a\0b', 'X-Evil: a\rb', 'X-Evil: a\nSet-Cookie: session=stolen', 'Content-Type: text/plain\0', 'X-Fine: 1\nContent-Length: 3']
    let next = 0
    await rawAgent(mls.url, (socket) => {
      socket.write(`HTTP/1.1 200 OK\r\n${heads[next++]}\r\nContent-Length: 2\r\n\r\nok`)
    })
    for (const head of heads) {
      const result = await postTask(mls.url, { region: 'usa', payload: head })
      expect({ head, status: result.status }).toEqual({ head, status: 502 })
      expect(result.json()).toMatchObject({ code: 'all_attempts_failed', attempts: [{ node_id: 'raw', kind: 'invalid_answer' }] })
      expect(result.headers.get('set-cookie')).toBeNull()
    }
    await expectPoolsSettled(mls.url)
  })

  test('a transfer coding other than chunked is refused, not passed on as the body', async () => {
    const mls = server({ retry_count: 0 })
    const packed = zlib.gzipSync('hello').toString('latin1')
    const answers = [
      // gzip as a transfer coding, under chunked: the server cannot undo it, and must not pass the packed bytes on as the answer.
      `HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n${packed.length.toString(16)}\r\n${packed}\r\n0\r\n\r\n`,
      `HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n${packed.length.toString(16)}\r\n${packed}\r\n0\r\n\r\n`,
      `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\nConnection: close\r\n\r\n${packed}`,
    ]
    let next = 0
    await rawAgent(mls.url, (socket) => {
      const last = next === answers.length - 1
      socket.write(Buffer.from(answers[next++]!, 'latin1'))
      if (last) socket.end()
    })
    for (let index = 0; index < answers.length; index++) {
      const result = await postTask(mls.url, { region: 'usa', payload: index })
      expect({ index, status: result.status }).toEqual({ index, status: 502 })
      expect(result.json()).toMatchObject({ code: 'all_attempts_failed', attempts: [{ node_id: 'raw', kind: 'invalid_answer' }] })
    }
    await expectPoolsSettled(mls.url)
  })

  test('a Content-Encoding on an answer with no body (a 204, a zero length) passes the empty answer on', async () => {
    const mls = server({ retry_count: 0 })
    const answers = ['HTTP/1.1 204 No Content\r\nContent-Encoding: gzip\r\n\r\n', 'HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 0\r\n\r\n']
    let next = 0
    await rawAgent(mls.url, (socket) => {
      socket.write(answers[next++]!)
    })
    const noContent = await postTask(mls.url, { region: 'usa', payload: 1 })
    expect({ status: noContent.status, text: noContent.text }).toEqual({ status: 204, text: '' })
    const empty = await postTask(mls.url, { region: 'usa', payload: 2 })
    expect({ status: empty.status, text: empty.text }).toEqual({ status: 200, text: '' })
    await expectPoolsSettled(mls.url)
  })

  test('a body packed twice (Content-Encoding on two lines) is refused, not passed on half unpacked', async () => {
    const mls = server({ retry_count: 0 })
    const twice = zlib.gzipSync(zlib.gzipSync('hello'))
    const packed = zlib.gzipSync('hello')
    const answers = [
      Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Encoding: gzip\r\nContent-Length: ${twice.length}\r\n\r\n`), twice]),
      // Read as one list, "gzip, identity" is gzip: the caller must get the unpacked text, not the gzip bytes.
      Buffer.concat([
        Buffer.from(`HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Encoding: identity\r\nContent-Length: ${packed.length}\r\n\r\n`),
        packed,
      ]),
    ]
    let next = 0
    await rawAgent(mls.url, (socket) => {
      socket.write(answers[next++]!)
    })
    const refused = await postTask(mls.url, { region: 'usa', payload: 1 })
    expect(refused.status).toBe(502)
    expect(refused.json()).toMatchObject({ attempts: [{ kind: 'invalid_answer' }] })
    const unpacked = await postTask(mls.url, { region: 'usa', payload: 2 })
    expect({ status: unpacked.status, text: unpacked.text }).toEqual({ status: 200, text: 'hello' })
    await expectPoolsSettled(mls.url)
  })

  test('an answer in millions of 1-byte chunks costs memory in proportion to its size, not a buffer per chunk', async () => {
    const limit = 2 * 1024 * 1024
    const mls = server({ retry_count: 0, max_answer_bytes: limit, task_timeout: 60 })
    const wire = Buffer.from(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${'1\r\na\r\n'.repeat(limit)}0\r\n\r\n`)
    await heartbeat(mls.url, 'tiny-chunks', streamingAgent(wire).port)
    const { result, growth } = await rssGrowth(() => postTask(mls.url, { region: 'usa', payload: 1 }))
    expect(result.status).toBe(200)
    expect({ length: result.text.length, bytes: [...new Set(result.text)] }).toEqual({ length: limit, bytes: ['a'] })
    // A buffer per chunk took about 140 times the answer's size (some 300 MB here); copied into blocks, under 30 times.
    expect(growth / limit).toBeLessThan(64)
    await expectPoolsSettled(mls.url)
  }, 60_000)

  test('a status under 100 is an invalid answer at once, not an interim one waited past to the deadline', async () => {
    const mls = server({ retry_count: 0, task_timeout: 2 })
    await rawAgent(mls.url, (socket) => {
      socket.write('HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nok')
    })
    const startedMs = Date.now()
    const result = await postTask(mls.url, { region: 'usa', payload: 1 })
    expect(result.status).toBe(502)
    expect(result.json()).toMatchObject({ attempts: [{ kind: 'invalid_answer' }] })
    expect(Date.now() - startedMs).toBeLessThan(1000)
    await expectPoolsSettled(mls.url)
  })

  test('an answer followed by bytes that are no answer: the answer stands (it failed as invalid_answer), the connection is dropped', async () => {
    const mls = server({ retry_count: 0 })
    const agent = await rawAgent(mls.url, (socket, request) => socket.write(`${answer(request.taskId)}SSH-2.0-OpenSSH\r\n\r\n`))
    for (let index = 0; index < 3; index++) {
      const result = await postTask(mls.url, { region: 'usa', payload: index })
      expect(result.text).toBe(result.headers.get('x-task-id')!)
    }
    expect(agent.connections()).toBe(3)
    await expectPoolsSettled(mls.url)
  })

  test("a mix of every misbehaviour over few connections: no task gets another task's answer, and the bound is freed", async () => {
    const mls = server({ retry_count: 0, task_timeout: 2, http_agents: { max_connections: 4 } })
    const behaviours: Array<(socket: Socket<RawSocket>, taskId: string) => void> = [
      (socket, id) => socket.write(answer(id)),
      (socket, id) => socket.write(`${answer(id)}${answer('extra')}`),
      (socket, id) => socket.write(`${answer(id)}garbage`),
      (socket, id) => socket.write(`HTTP/1.1 100 Continue\r\n\r\n${answer(id)}`),
      (socket, id) => {
        socket.write(answer(id))
        setTimeout(() => socket.write('HTTP/1.1 200 OK\r\nContent-Le'), 1)
      },
      (socket, id) => {
        const bytes = answer(id)
        socket.write(bytes.slice(0, 20))
        setTimeout(() => socket.write(bytes.slice(20)), 2)
      },
      (socket) => socket.end(),
      (socket) => {
        socket.write('HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\npart')
        socket.end()
      },
      (socket, id) => socket.write(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${id.length.toString(16)}\r\n${id}\r\n0\r\n\r\n`),
    ]
    let seed = 7
    const random = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31
      return seed / 2 ** 31
    }
    await rawAgent(mls.url, (socket, request) => behaviours[Math.floor(random() * behaviours.length)]!(socket, request.taskId))
    const results = await Promise.all(Array.from({ length: 300 }, (_, index) => postTask(mls.url, { region: 'usa', payload: index })))
    const answered = results.filter((result) => result.status === 200)
    expect(answered.length).toBeGreaterThan(100)
    expect(answered.filter((result) => result.text !== result.headers.get('x-task-id'))).toEqual([])
    expect(results.filter((result) => result.status !== 200 && result.status !== 502)).toEqual([])
    await expectPoolsSettled(mls.url)
  })
})

/** One task answered by whatever the agent writes: its status, body, headers, and the pool settled after it. */
async function oneTask(answerBytes: string | Buffer, overrides: Parameters<typeof server>[0] = {}, options: { close?: boolean } = {}) {
  const mls = server({ retry_count: 0, task_timeout: 2, ...overrides })
  const agent = await rawAgent(mls.url, (socket) => {
    socket.write(typeof answerBytes === 'string' ? Buffer.from(answerBytes, 'latin1') : answerBytes)
    if (options.close) socket.end()
  })
  const startedMs = Date.now()
  const result = await postTask(mls.url, { region: 'usa', payload: 1 })
  const tookMs = Date.now() - startedMs
  await expectPoolsSettled(mls.url)
  return { mls, agent, result, tookMs }
}

describe('hostile HTTP agents: inputs already handled', () => {
  test('Transfer-Encoding beside a Content-Length: the chunked body is read, the length ignored', async () => {
    const { result } = await oneTask('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n')
    expect({ status: result.status, text: result.text }).toEqual({ status: 200, text: 'hello world' })
  })

  test('conflicting Content-Lengths are an invalid answer', async () => {
    const { result } = await oneTask('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 7\r\n\r\nokHTTP/1')
    expect(result.status).toBe(502)
    expect(result.json()).toMatchObject({ attempts: [{ kind: 'invalid_answer', reason: 'sent no valid HTTP answer: conflicting Content-Length headers' }] })
  })

  test('chunk extensions, quoted ones with ";" inside too, are skipped', async () => {
    const { result } = await oneTask('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;a="x;y=\\"z"\r\nabc\r\n2 ; b=1\r\nde\r\n0;last\r\n\r\n')
    expect({ status: result.status, text: result.text }).toEqual({ status: 200, text: 'abcde' })
  })

  test('a huge chunk size is too large at once, a chunk-size line of 16 hex digits is malformed', async () => {
    const huge = await oneTask('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffff\r\nabc')
    expect(huge.result.status).toBe(502)
    expect(huge.result.json()).toMatchObject({ code: 'answer_too_large' })
    expect(huge.tookMs).toBeLessThan(1000)
    const overflow = await oneTask('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000003\r\nabc\r\n0\r\n\r\n')
    expect(overflow.result.json()).toMatchObject({ attempts: [{ kind: 'invalid_answer' }] })
  })

  test('a whole answer with bare LF line endings is no answer: the task ends at its deadline, the socket freed', async () => {
    const { mls, result, tookMs } = await oneTask('HTTP/1.1 200 OK\nContent-Length: 2\n\nok')
    expect(result.status).toBe(504)
    expect(tookMs).toBeLessThan(4000)
    expect(await poolFigures(mls.url)).toEqual({ open: 0, busy: 0, queued: 0 })
  })

  test('interim answers without end: the task ends at its deadline', async () => {
    const mls = server({ retry_count: 0, task_timeout: 1 })
    await rawAgent(mls.url, (socket) => {
      const timer = setInterval(() => {
        if (socket.write('HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n') < 0) clearInterval(timer)
      }, 5)
      defer(() => clearInterval(timer))
    })
    const startedMs = Date.now()
    const result = await postTask(mls.url, { region: 'usa', payload: 1 })
    expect(result.status).toBe(504)
    expect(Date.now() - startedMs).toBeLessThan(3000)
    await expectPoolsSettled(mls.url)
  })

  test('a 100 Continue then a close is a failed attempt, not a hang', async () => {
    const { result, tookMs } = await oneTask('HTTP/1.1 100 Continue\r\n\r\n', {}, { close: true })
    expect(result.status).toBe(502)
    expect(result.json()).toMatchObject({ code: 'all_attempts_failed' })
    expect(tookMs).toBeLessThan(1000)
  })

  test('101 Switching Protocols is an invalid answer', async () => {
    const { result } = await oneTask('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x02hi')
    expect(result.json()).toMatchObject({
      attempts: [{ kind: 'invalid_answer', reason: 'sent no valid HTTP answer: the agent switched protocols (101) unasked' }],
    })
  })

  test('204 and 304 with a body: no body passed on, and the connection is not reused', async () => {
    for (const status of ['204 No Content', '304 Not Modified']) {
      const mls = server({ retry_count: 0 })
      const agent = await rawAgent(mls.url, (socket, request) => {
        if (request.body === '1') socket.write(`HTTP/1.1 ${status}\r\nContent-Length: 5\r\n\r\nhello`)
        else socket.write(answer(request.taskId))
      })
      const empty = await postTask(mls.url, { region: 'usa', payload: 1 })
      expect({ status: empty.status, text: empty.text }).toEqual({ status: Number(status.slice(0, 3)), text: '' })
      const next = await postTask(mls.url, { region: 'usa', payload: 2 })
      expect(next.text).toBe(next.headers.get('x-task-id')!)
      expect(agent.connections()).toBe(2)
      await expectPoolsSettled(mls.url)
    }
  })

  test('odd status lines: HTTP/2.0 and HTTP/1.2 are invalid, no reason phrase is fine, a status past 599 counts as a failure', async () => {
    for (const line of ['HTTP/2.0 200 OK', 'HTTP/1.2 200 OK', 'HTTP/1.1 2000 OK', 'http/1.1 200 OK']) {
      const { result } = await oneTask(`${line}\r\nContent-Length: 2\r\n\r\nok`)
      expect({ line, answer: result.json() }).toMatchObject({ line, answer: { attempts: [{ kind: 'invalid_answer' }] } })
    }
    const bare = await oneTask('HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok')
    expect({ status: bare.result.status, text: bare.result.text }).toEqual({ status: 200, text: 'ok' })
    const odd = await oneTask('HTTP/1.1 999 Odd\r\nContent-Length: 2\r\n\r\nok')
    expect(odd.result.status).toBe(502)
    expect(odd.result.json()).toMatchObject({ attempts: [{ kind: 'status', status: 999 }] })
  })

  test('folded header lines are joined; thousands of tiny headers are read', async () => {
    const folded = await oneTask('HTTP/1.1 200 OK\r\nX-Folded: one\r\n two\r\n\tthree\r\nContent-Length: 2\r\n\r\nok')
    expect(folded.result.headers.get('x-folded')).toBe('one two three')
    const many = await oneTask(`HTTP/1.1 200 OK\r\n${'X-A: 1\r\n'.repeat(8000)}Content-Length: 2\r\n\r\nok`)
    expect({ status: many.result.status, text: many.result.text }).toEqual({ status: 200, text: 'ok' })
    expect(many.tookMs).toBeLessThan(1000)
    const tooMany = await oneTask(`HTTP/1.1 200 OK\r\n${'X-A: 1\r\n'.repeat(10_000)}Content-Length: 2\r\n\r\nok`)
    expect(tooMany.result.json()).toMatchObject({ attempts: [{ kind: 'invalid_answer', reason: expect.stringContaining('over 65536 bytes') }] })
  })

  test('a close in the middle of a chunk, or of a declared length, is a lost connection', async () => {
    for (const cut of ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\nabc', 'HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc']) {
      const { result } = await oneTask(cut, {}, { close: true })
      expect(result.json()).toMatchObject({ attempts: [{ kind: 'disconnected' }] })
    }
  })

  test('compression bombs (gzip, deflate, br) are held to max_answer_bytes by their unpacked size; a good one unpacks whole', async () => {
    const limit = 64 * 1024
    const bomb = Buffer.alloc(50 * limit, 'x')
    for (const [coding, pack] of [
      ['gzip', zlib.gzipSync],
      ['deflate', zlib.deflateSync],
      ['br', zlib.brotliCompressSync],
    ] as const) {
      const packed = pack(bomb)
      const { result } = await oneTask(
        Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Encoding: ${coding}\r\nContent-Length: ${packed.length}\r\n\r\n`), packed]),
        { max_answer_bytes: limit },
      )
      expect({ coding, answer: result.json() }).toMatchObject({ coding, answer: { code: 'answer_too_large' } })
    }
    // Packed, then sent in 7-byte chunks: the body is the unpacked bytes, exactly.
    const text = Array.from({ length: 2000 }, (_, index) => `line ${index}\n`).join('')
    const packed = zlib.gzipSync(text)
    let chunked = ''
    for (let offset = 0; offset < packed.length; offset += 7) {
      const piece = packed.subarray(offset, offset + 7)
      chunked += `${piece.length.toString(16)}\r\n${piece.toString('latin1')}\r\n`
    }
    const { result } = await oneTask(
      `HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n${chunked}0\r\n\r\n`,
      {
        max_answer_bytes: limit,
      },
    )
    expect(result.status).toBe(200)
    expect(result.text).toBe(text)
  })

  test('an agent that closes after every answer without Connection: close fails no task of many', async () => {
    const mls = server({ http_agents: { max_connections: 4 } })
    const agent = await rawAgent(mls.url, (socket, request) => {
      socket.write(answer(request.taskId))
      socket.end()
    })
    const results = await Promise.all(Array.from({ length: 200 }, (_, index) => postTask(mls.url, { region: 'usa', payload: index })))
    expect(results.filter((result) => result.status !== 200 || result.text !== result.headers.get('x-task-id'))).toEqual([])
    expect(agent.connections()).toBeGreaterThanOrEqual(200)
    await expectPoolsSettled(mls.url)
  })

  test('an agent that never answers holds its connections only to each task deadline; the bound is free again after', async () => {
    const mls = server({ retry_count: 0, task_timeout: 1, http_agents: { max_connections: 2 } })
    let answering = false
    await rawAgent(mls.url, (socket, request) => {
      if (answering) socket.write(answer(request.taskId))
      // Else: read, never answered, never closed.
    })
    const startedMs = Date.now()
    const stalled = await Promise.all(Array.from({ length: 4 }, (_, index) => postTask(mls.url, { region: 'usa', payload: index })))
    expect(stalled.map((result) => result.status)).toEqual([504, 504, 504, 504])
    // Every task's deadline counts from its own start, queued or not: four tasks over two connections still end in about 1 s.
    expect(Date.now() - startedMs).toBeLessThan(3000)
    expect(await poolFigures(mls.url)).toEqual({ open: 0, busy: 0, queued: 0 })
    answering = true
    const results = await Promise.all(Array.from({ length: 4 }, (_, index) => postTask(mls.url, { region: 'usa', payload: index })))
    expect(results.map((result) => result.text === result.headers.get('x-task-id'))).toEqual([true, true, true, true])
    await expectPoolsSettled(mls.url)
  })

  test('an answer in chunks of 1 byte and 4 KiB in turn comes through byte for byte, in memory in proportion to its size', async () => {
    const limit = 2 * 1024 * 1024
    const mls = server({ retry_count: 0, max_answer_bytes: limit, task_timeout: 60 })
    const pieces: Buffer[] = []
    const expected: Buffer[] = []
    for (let total = 0, index = 0; total < limit - 5000; index++) {
      const piece = Buffer.alloc(index % 2 === 0 ? 1 : 4096, String.fromCharCode(97 + (index % 26)))
      expected.push(piece)
      pieces.push(Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n'))
      total += piece.length
    }
    const wire = Buffer.concat([
      Buffer.from('HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n'),
      ...pieces,
      Buffer.from('0\r\n\r\n'),
    ])
    await heartbeat(mls.url, 'mixed-chunks', streamingAgent(wire).port)
    const { result, growth } = await rssGrowth(async () => {
      const response = await fetch(`${mls.url}/task/request`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` },
        body: JSON.stringify({ region: 'usa', payload: 1 }),
      })
      return { status: response.status, body: Buffer.from(await response.arrayBuffer()) }
    })
    const { body } = result
    expect(result.status).toBe(200)
    expect(body.equals(Buffer.concat(expected))).toBe(true)
    // Small pieces share 64 KiB blocks and large ones keep their own: a few times the answer at most (a block per piece would be 16).
    expect(growth / limit).toBeLessThan(8)
    await expectPoolsSettled(mls.url)
  }, 60_000)
})

/** An agent that answers every request with `wire`, written as fast as the server reads it (the rest at each drain). */
function streamingAgent(wire: Buffer): { port: number } {
  const pump = (socket: Socket<{ offset: number }>) => {
    while (socket.data.offset < wire.length) {
      const written = socket.write(wire.subarray(socket.data.offset, socket.data.offset + (1 << 20)))
      if (written <= 0) return
      socket.data.offset += written
    }
  }
  const listener = Bun.listen<{ offset: number }>({
    hostname: '127.0.0.1',
    port: 0,
    socket: {
      open(socket) {
        socket.data = { offset: wire.length }
      },
      data(socket) {
        socket.data.offset = 0
        pump(socket)
      },
      drain: pump,
    },
  })
  defer(() => listener.stop(true))
  return listener
}

/** How far this process's resident memory rose above its level before `during` (after a full collection), at its peak. */
async function rssGrowth<T>(during: () => Promise<T>): Promise<{ result: T; growth: number }> {
  Bun.gc(true)
  const before = process.memoryUsage().rss
  let peak = before
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss)
  }, 2)
  try {
    const result = await during()
    return { result, growth: peak - before }
  } finally {
    clearInterval(sampler)
  }
}
