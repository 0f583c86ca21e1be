/** The test helper openWs against the real server: a wait on a closed socket fails at once, saying how it closed. */
import { describe, expect, test } from 'bun:test'
import { openWs, TOKEN, testScope } from '../../support/helpers.ts'

const scope = testScope()
/** Far past any test's timeout: a wait that ran it out would fail the test by timing out, not by the assertion. */
const FOREVER_MS = 10 * 60_000

function badRegister() {
  return { type: 'register', payload: { node_id: 'intruder', token: 'not-a-real-token', region: 'us-east-1' } }
}

describe('openWs (test helper)', () => {
  test('a pending next fails as soon as the socket closes, with the close code and reason', async () => {
    const mls = scope.server()
    const peer = await openWs(mls.wsUrl)
    scope.defer(() => peer.close())
    const waiting = peer.next('registered', FOREVER_MS)
    peer.send(badRegister())
    await expect(waiting).rejects.toThrow('no registered: the socket closed (code 1008, reason "invalid token")')
  })

  test('messages that arrived before the close are still delivered', async () => {
    const mls = scope.server()
    const peer = await openWs(mls.wsUrl)
    peer.send(badRegister())
    expect(await peer.closed).toEqual({ code: 1008, reason: 'invalid token' })
    const error = await peer.next('error', FOREVER_MS)
    expect(error.payload).toMatchObject({ code: 'invalid_token' })
  })

  test('a next begun after the close fails at once too', async () => {
    const mls = scope.server()
    const peer = await openWs(mls.wsUrl)
    peer.send({ type: 'monitor', payload: { token: 'wrong-token' } })
    await peer.closed
    await expect(peer.next('monitor_ok', FOREVER_MS)).rejects.toThrow(/^no monitor_ok: the socket closed \(code 1008/)
    // What came before the close is still there to read.
    expect((await peer.next(undefined, FOREVER_MS)).type).toBe('error')
  })

  test('a next that a message answers resolves as before', async () => {
    const mls = scope.server()
    const peer = await openWs(mls.wsUrl)
    scope.defer(() => peer.close())
    peer.send({ type: 'monitor', payload: { token: TOKEN } })
    expect((await peer.next('monitor_ok')).type).toBe('monitor_ok')
  })
})
