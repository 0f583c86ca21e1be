/**
 * Hostile and broken HTTP agents against the server's own HTTP/1.1 client (src/http-client/,
 * src/transports/http.ts): a real server, raw TCP agents that write whatever bytes a test wants, real
 * callers. Each test asserts what the caller gets and that the agent's pool is left with nothing busy.
 */
import { describe, expect, test } from 'bun:test'
import net from 'node:net'
import zlib from 'node:zlib'
import type { Socket } from 'bun'
import { postTask, TOKEN, testScope, waitFor } from '../helpers.ts'

const { defer, server } = testScope()

interface AgentRequest {
  head: string
  body: string
  taskId: string
}

interface RawSocket {
  buffered: string
  id: number
}

type Reply = (socket: Socket<RawSocket>, request: AgentRequest, connection: number) => void

async function heartbeat(url: string, nodeId: string, port: number): Promise<void> {
  const response = await fetch(`${url}/client/heartbeat`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ip: '127.0.0.1', node_id: nodeId, token: TOKEN, region: 'usa', port }),
  })
  expect(response.status).toBe(200)
}

/** A raw TCP agent registered by heartbeat: `reply` gets each whole request (head and declared body) and writes any bytes it likes. */
async function rawAgent(url: string, reply: Reply, nodeId = 'raw') {
  let connections = 0
  const requests: AgentRequest[] = []
  const listener = Bun.listen<RawSocket>({
    hostname: '127.0.0.1',
    port: 0,
    socket: {
      open(socket) {
        socket.data = { buffered: '', id: ++connections }
      },
      data(socket, data) {
        socket.data.buffered += data.toString('latin1')
        for (;;) {
          const end = socket.data.buffered.indexOf('\r\n\r\n')
          if (end === -1) return
          const head = socket.data.buffered.slice(0, end)
          const length = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0)
          if (socket.data.buffered.length < end + 4 + length) return
          const request = { head, body: socket.data.buffered.slice(end + 4, end + 4 + length), taskId: /x-task-id: (\S+)/i.exec(head)?.[1] ?? '' }
          socket.data.buffered = socket.data.buffered.slice(end + 4 + length)
          requests.push(request)
          reply(socket, request, socket.data.id)
        }
      },
    },
  })
  defer(() => listener.stop(true))
  await heartbeat(url, nodeId, listener.port)
  return { connections: () => connections, requests }
}

/** The HTTP agent pools' figures as GET /metrics reports them. */
async function poolFigures(url: string): Promise<{ open: number; busy: number; queued: number }> {
  const text = await (await fetch(`${url}/metrics`)).text()
  const read = (name: string) => Number(new RegExp(`^${name.replace(/[{}]/g, '\\$&')} (\\d+)$`, 'm').exec(text)?.[1])
  return {
    open: read('moonlight_http_agent_connections{state="open"}'),
    busy: read('moonlight_http_agent_connections{state="busy"}'),
    queued: read('moonlight_http_agent_calls_queued'),
  }
}

/** Every call to the agents over: nothing busy and nothing waiting (a slot never freed would stay busy). */
async function expectPoolsSettled(url: string): Promise<void> {
  await waitFor(async () => {
    const figures = await poolFigures(url)
    return figures.busy === 0 && figures.queued === 0
  }, 'the HTTP agent pools to have nothing busy or queued')
}

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
})
