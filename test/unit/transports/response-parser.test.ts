import { describe, expect, test } from 'bun:test'
import { ParseError, type ResponseHead, ResponseParser } from '../../../src/transports/http-client/response-parser.ts'

interface Parsed {
  answers: Array<{ head: ResponseHead; body: string; ended: boolean }>
  error?: ParseError
}

const LIMITS = { maxHeaderBytes: 1024, maxBodyBytes: 4096 }

/** Feeds `pieces` one by one, then closes the connection if `close`; the answers seen, and the error if one was thrown. */
function parse(pieces: Uint8Array[], options: { close?: boolean; limits?: typeof LIMITS } = {}): Parsed {
  const parsed: Parsed = { answers: [] }
  const parser = new ResponseParser(
    {
      head: (head) => parsed.answers.push({ head, body: '', ended: false }),
      body: (chunk) => {
        parsed.answers[parsed.answers.length - 1]!.body += Buffer.from(chunk).toString('latin1')
      },
      end: () => {
        parsed.answers[parsed.answers.length - 1]!.ended = true
      },
    },
    options.limits ?? LIMITS,
  )
  try {
    for (const piece of pieces) parser.feed(piece)
    if (options.close) parser.close()
  } catch (error) {
    if (!(error instanceof ParseError)) throw error
    parsed.error = error
  }
  return parsed
}

/** The same bytes in two pieces cut at every offset, and one byte at a time: each must parse as the whole does. */
function expectSameAtEverySplit(text: string, options: { close?: boolean; limits?: typeof LIMITS } = {}): Parsed {
  const bytes = Buffer.from(text, 'latin1')
  const whole = parse([bytes], options)
  // A body cut short by its limit may have passed some pieces on first: then only the error must agree.
  const seen = (parsed: Parsed) => (whole.error?.code === 'body_too_large' ? parsed.error : parsed)
  for (let cut = 0; cut <= bytes.length; cut++) {
    expect(seen(parse([bytes.subarray(0, cut), bytes.subarray(cut)], options))).toEqual(seen(whole))
  }
  const byteByByte = [...bytes].map((byte) => Uint8Array.of(byte))
  expect(seen(parse(byteByByte, options))).toEqual(seen(whole))
  return whole
}

describe('response parser', () => {
  test('a Content-Length body', () => {
    const parsed = expectSameAtEverySplit('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}')
    expect(parsed.error).toBeUndefined()
    expect(parsed.answers).toHaveLength(1)
    expect(parsed.answers[0]).toMatchObject({ body: '{"ok":true}', ended: true })
    expect(parsed.answers[0]!.head).toMatchObject({
      status: 200,
      reason: 'OK',
      minorVersion: 1,
      keepAlive: true,
      headers: [
        ['content-type', 'application/json'],
        ['content-length', '11'],
      ],
    })
  })

  test('a chunked body with chunk extensions and trailers', () => {
    const parsed = expectSameAtEverySplit(
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n1 ; quoted="a;b"\r\n,\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n',
    )
    expect(parsed.error).toBeUndefined()
    expect(parsed.answers).toMatchObject([{ body: 'hello, world', ended: true, head: { keepAlive: true } }])
  })

  test('a chunked body wins over a Content-Length beside it', () => {
    const parsed = expectSameAtEverySplit('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n')
    expect(parsed.answers).toMatchObject([{ body: 'abcd', ended: true }])
  })

  test('a body delimited by the close of the connection ends at the close, and the connection is not kept', () => {
    const parsed = expectSameAtEverySplit('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it\r\nuntil the end', { close: true })
    expect(parsed.error).toBeUndefined()
    expect(parsed.answers).toMatchObject([{ body: 'all of it\r\nuntil the end', ended: true, head: { keepAlive: false } }])
    const open = parse([Buffer.from('HTTP/1.1 200 OK\r\n\r\npart')])
    expect(open.answers).toMatchObject([{ body: 'part', ended: false }])
  })

  test('Connection: close is reported, and the body still ends at its length', () => {
    const parsed = expectSameAtEverySplit('HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye')
    expect(parsed.answers).toMatchObject([{ body: 'bye', ended: true, head: { keepAlive: false } }])
  })

  test('HTTP/1.0: closes unless keep-alive is asked, and Keep-Alive: timeout is read', () => {
    expect(expectSameAtEverySplit('HTTP/1.0 200 OK\r\n\r\nold', { close: true }).answers).toMatchObject([
      { body: 'old', ended: true, head: { minorVersion: 0, keepAlive: false } },
    ])
    expect(
      expectSameAtEverySplit('HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: Keep-Alive\r\nKeep-Alive: timeout=5, max=100\r\n\r\nok').answers,
    ).toMatchObject([{ body: 'ok', ended: true, head: { minorVersion: 0, keepAlive: true, keepAliveTimeoutS: 5 } }])
  })

  test('a whole answer in one packet with the start of the next: both are read', () => {
    const parsed = expectSameAtEverySplit('HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 201 Created\r\nContent-Len')
    expect(parsed.answers).toMatchObject([{ body: 'a', ended: true, head: { status: 200 } }])
    const both = parse([Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 201 Created\r\nContent-Len'), Buffer.from('gth: 2\r\n\r\nbc')])
    expect(both.answers).toMatchObject([
      { body: 'a', ended: true, head: { status: 200 } },
      { body: 'bc', ended: true, head: { status: 201, reason: 'Created' } },
    ])
  })

  test('an answer whose head repeats the last one byte for byte gets the same head, parsed once; any other byte, a head of its own', () => {
    const answer = (date: string, length: number) => `HTTP/1.1 200 OK\r\nDate: ${date}\r\nContent-Length: ${length}\r\n\r\n${'x'.repeat(length)}`
    const parsed = parse([
      Buffer.from(answer('Mon', 2) + answer('Mon', 2)),
      Buffer.from(answer('Tue', 2)),
      Buffer.from(answer('Tue', 3)),
      Buffer.from(`HTTP/1.1 100 Continue\r\n\r\n${answer('Tue', 3)}`),
      Buffer.from('HTTP/1.1 200 OK\r\nDate: Tue\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc'),
    ])
    const heads = parsed.answers.map((each) => each.head)
    expect(parsed.answers.map((each) => each.body)).toEqual(['xx', 'xx', 'xx', 'xxx', 'xxx', 'abc'])
    expect(heads[1]).toBe(heads[0]!)
    expect(heads[2]).not.toBe(heads[1]!)
    expect(heads[2]!.headers).toEqual([
      ['date', 'Tue'],
      ['content-length', '2'],
    ])
    expect(heads[3]).not.toBe(heads[2]!)
    expect(heads[3]!.headers[1]).toEqual(['content-length', '3'])
    // An interim answer between two equal heads does not stand in for either.
    expect(heads[4]).toBe(heads[3]!)
    expect(heads[5]).toMatchObject({ keepAlive: false })
    expect(heads[4]).toMatchObject({ keepAlive: true })
    // Cut anywhere, a repeated head reads as the whole does; one that only starts like the last is parsed on its own.
    const repeated = expectSameAtEverySplit(`${answer('Mon', 2)}${answer('Mon', 2)}HTTP/1.1 200 OK\r\nDate: Mon\r\nContent-Length: 2\r\nX-More: 1\r\n\r\nzz`)
    expect(repeated.answers.map((each) => [each.body, each.head.headers.length])).toEqual([
      ['xx', 2],
      ['xx', 2],
      ['zz', 3],
    ])
  })

  test('100 Continue and other interim answers are skipped', () => {
    const parsed = expectSameAtEverySplit(
      'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone',
    )
    expect(parsed.answers).toMatchObject([{ body: 'done', ended: true, head: { status: 200 } }])
  })

  test('204, 304 and a zero length end at once, with no body', () => {
    expect(
      expectSameAtEverySplit('HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n').answers,
    ).toMatchObject([
      { body: '', ended: true, head: { status: 204 } },
      { body: '', ended: true, head: { status: 304 } },
      { body: '', ended: true, head: { status: 200 } },
    ])
  })

  test('a status line with no reason, folded header lines and binary body bytes', () => {
    const body = String.fromCharCode(...Array.from({ length: 256 }, (_, index) => index))
    const parsed = expectSameAtEverySplit(`HTTP/1.1 200\r\nX-Long: one\r\n two\r\nContent-Length: 256\r\n\r\n${body}`, {
      limits: { maxHeaderBytes: 1024, maxBodyBytes: 4096 },
    })
    expect(parsed.answers[0]!.head).toMatchObject({
      status: 200,
      reason: '',
      headers: [
        ['x-long', 'one two'],
        ['content-length', '256'],
      ],
    })
    expect(parsed.answers[0]!.body).toBe(body)
  })

  test('a header section over the limit fails with a clear reason', () => {
    const big = `HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(2000)}\r\nContent-Length: 0\r\n\r\n`
    const parsed = expectSameAtEverySplit(big)
    expect(parsed.answers).toEqual([])
    expect(parsed.error).toMatchObject({ code: 'header_too_large', message: "the answer's status line and headers are over 1024 bytes" })
    // No end in sight is just as much over the limit.
    expect(parse([Buffer.from(`HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(2000)}`)]).error).toMatchObject({ code: 'header_too_large' })
    const trailers = parse([Buffer.from(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: ${'t'.repeat(2000)}\r\n\r\n`)])
    expect(trailers.error).toMatchObject({ code: 'header_too_large' })
  })

  test('a head of exactly the limit passes', () => {
    const head = 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Pad: '
    const exact = `${head}${'p'.repeat(1024 - head.length - 4)}\r\n\r\n`
    expect(Buffer.byteLength(exact)).toBe(1024)
    expect(parse([Buffer.from(exact)]).answers).toMatchObject([{ ended: true }])
    expect(parse([Buffer.from(`${head}${'p'.repeat(1024 - head.length - 3)}\r\n\r\n`)]).error).toMatchObject({ code: 'header_too_large' })
  })

  test('a body over the limit fails, however it is framed', () => {
    const limits = { maxHeaderBytes: 1024, maxBodyBytes: 8 }
    expect(expectSameAtEverySplit('HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n123456789', { limits }).error).toMatchObject({ code: 'body_too_large' })
    expect(expectSameAtEverySplit('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n4\r\n6789\r\n0\r\n\r\n', { limits }).error).toMatchObject(
      {
        code: 'body_too_large',
      },
    )
    expect(expectSameAtEverySplit('HTTP/1.1 200 OK\r\n\r\n123456789', { limits, close: true }).error).toMatchObject({ code: 'body_too_large' })
    expect(expectSameAtEverySplit('HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n12345678', { limits }).answers).toMatchObject([
      { body: '12345678', ended: true },
    ])
  })

  test('malformed answers fail', () => {
    for (const text of [
      'HTTP/2 200 OK\r\n\r\n',
      'SSH-2.0-OpenSSH_9.2\r\n\r\n',
      'HTTP/1.1 200 OK\r\nno colon here\r\n\r\n',
      'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd',
      'HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n',
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n',
      'HTTP/1.1 200 OK\r\nX-Nul: a\0b\r\nContent-Length: 0\r\n\r\n',
      'HTTP/1.1 200 OK\r\nX-Lf: a\nContent-Length: 0\r\n\r\n',
      'HTTP/1.1 200 OK\r\nX-Cr: a\r\r\n\r\n',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nabc',
      'HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n',
      'HTTP/1.1 000 None\r\n\r\n',
    ]) {
      expect(expectSameAtEverySplit(text).error).toMatchObject({ code: 'malformed' })
    }
  })

  test('a close in the middle of an answer is an incomplete answer; a close between answers is not', () => {
    expect(expectSameAtEverySplit('HTTP/1.1 200 OK\r\nContent-Le', { close: true }).error).toMatchObject({ code: 'incomplete' })
    expect(expectSameAtEverySplit('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab', { close: true }).error).toMatchObject({ code: 'incomplete' })
    expect(expectSameAtEverySplit('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab', { close: true }).error).toMatchObject({ code: 'incomplete' })
    const between = expectSameAtEverySplit('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nab', { close: true })
    expect(between.error).toBeUndefined()
  })

  test('knows whether any byte of the current answer has come', () => {
    const parser = new ResponseParser({ head: () => {}, body: () => {}, end: () => {} }, LIMITS)
    expect(parser.started).toBe(false)
    parser.feed(Buffer.from('HTTP/1.1 100 Continue\r\n\r\n'))
    expect(parser.started).toBe(true)
    parser.feed(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx'))
    expect(parser.started).toBe(false)
    expect(parser.idle).toBe(true)
  })
})
