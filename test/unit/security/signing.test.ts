import { describe, expect, test } from 'bun:test'
import { SIGNATURE_HEADER, sign, signatureHeaders, TIMESTAMP_HEADER, verify } from '../../../src/security/signing.ts'

const SECRET = 'moonlight-test-secret'
const NOW_S = 1_700_000_000
const BODY = '{"a":1}'

/** The headers of a call signed at `timestampS`. */
function signedAt(timestampS: number, body: string | Uint8Array = BODY, secret = SECRET): Headers {
  return new Headers(signatureHeaders(secret, body, timestampS))
}

describe('signing', () => {
  test('matches a known vector (computed with `openssl dgst -sha256 -hmac`)', () => {
    // printf '%s' '1700000000.{"a":1}' | openssl dgst -sha256 -hmac 'moonlight-test-secret'
    expect(sign(SECRET, NOW_S, BODY)).toBe('sha256=6e4f36c916af56128cd955b1a82526831eda43b01cb13d02e536042bbf7abd96')
    // The body's UTF-8 bytes, the same whether given as text or as the bytes sent.
    const unicode = '{"é":"☃"}'
    expect(sign(SECRET, NOW_S, unicode)).toBe('sha256=d4f6802dbb55283c7cb7949a1bff7adb50b6e3de91f85a94c0db154b8835dc34')
    expect(sign(SECRET, NOW_S, new TextEncoder().encode(unicode))).toBe(sign(SECRET, NOW_S, unicode))
  })

  test('the headers carry whole unix seconds and the signature of that timestamp', () => {
    const headers = signatureHeaders(SECRET, BODY, NOW_S + 0.75)
    expect(headers).toEqual({ [TIMESTAMP_HEADER]: String(NOW_S), [SIGNATURE_HEADER]: sign(SECRET, NOW_S, BODY) })
  })

  test('a call signed now verifies, within 300 s either way', () => {
    expect(verify(SECRET, signedAt(NOW_S), BODY, NOW_S)).toEqual({ ok: true })
    expect(verify(SECRET, signedAt(NOW_S - 300), BODY, NOW_S)).toEqual({ ok: true })
    expect(verify(SECRET, signedAt(NOW_S + 300), BODY, NOW_S)).toEqual({ ok: true })
  })

  test('a tampered body, or another secret, does not verify', () => {
    expect(verify(SECRET, signedAt(NOW_S), '{"a":2}', NOW_S)).toEqual({ ok: false, reason: 'the signature does not match' })
    expect(verify(SECRET, signedAt(NOW_S), '{"a":1} ', NOW_S)).toEqual({ ok: false, reason: 'the signature does not match' })
    expect(verify(SECRET, signedAt(NOW_S, BODY, 'another-secret-0123'), BODY, NOW_S)).toEqual({ ok: false, reason: 'the signature does not match' })
  })

  test('a stale or a future timestamp is refused, even with a signature that matches it', () => {
    expect(verify(SECRET, signedAt(NOW_S - 301), BODY, NOW_S)).toEqual({ ok: false, reason: 'the timestamp is 301 s old (at most 300 s allowed)' })
    expect(verify(SECRET, signedAt(NOW_S + 301), BODY, NOW_S)).toEqual({ ok: false, reason: 'the timestamp is 301 s ahead (at most 300 s allowed)' })
  })

  test('a timestamp changed after signing does not verify: it is inside the HMAC', () => {
    const headers = signedAt(NOW_S)
    headers.set(TIMESTAMP_HEADER, String(NOW_S - 1))
    expect(verify(SECRET, headers, BODY, NOW_S)).toEqual({ ok: false, reason: 'the signature does not match' })
  })

  test('a wrong scheme prefix, a missing header or a timestamp that is not unix seconds is refused', () => {
    const hex = sign(SECRET, NOW_S, BODY).slice('sha256='.length)
    for (const signature of [hex, `sha1=${hex}`, `SHA256=${hex}`]) {
      const headers = new Headers({ [TIMESTAMP_HEADER]: String(NOW_S), [SIGNATURE_HEADER]: signature })
      expect(verify(SECRET, headers, BODY, NOW_S)).toEqual({ ok: false, reason: 'x-moonlight-signature must start with "sha256="' })
    }
    const unsigned = 'the call is not signed (x-moonlight-timestamp and x-moonlight-signature are required)'
    expect(verify(SECRET, new Headers(), BODY, NOW_S)).toEqual({ ok: false, reason: unsigned })
    expect(verify(SECRET, new Headers({ [SIGNATURE_HEADER]: sign(SECRET, NOW_S, BODY) }), BODY, NOW_S)).toEqual({ ok: false, reason: unsigned })
    for (const timestamp of ['1.7e9', '-1', '', '0x6553f100', '1700000000.5']) {
      const headers = new Headers({ [TIMESTAMP_HEADER]: timestamp, [SIGNATURE_HEADER]: sign(SECRET, timestamp, BODY) })
      expect(verify(SECRET, headers, BODY, NOW_S)).toEqual({ ok: false, reason: 'x-moonlight-timestamp must be unix seconds' })
    }
  })

  test('a signature of another length is refused, not thrown on', () => {
    const headers = new Headers({ [TIMESTAMP_HEADER]: String(NOW_S), [SIGNATURE_HEADER]: `${sign(SECRET, NOW_S, BODY)}00` })
    expect(verify(SECRET, headers, BODY, NOW_S)).toEqual({ ok: false, reason: 'the signature does not match' })
    // As many characters as a real one, but "é" is two bytes: compared as bytes, the lengths differ.
    headers.set(SIGNATURE_HEADER, `sha256=é${sign(SECRET, NOW_S, BODY).slice(8)}`)
    expect(verify(SECRET, headers, BODY, NOW_S)).toEqual({ ok: false, reason: 'the signature does not match' })
  })
})
