/**
 * A hostile pass over the WebSocket agent protocol, the stored-task API and the operator actions:
 * what a broken or malicious agent or caller sends, and what the server must do about it. Each test
 * drives the real server over real sockets.
 */
import { describe, expect, test } from 'bun:test'
import { openWs, postTask, startWsAgent, TOKEN, testScope, waitFor } from '../helpers.ts'

const { defer, server } = testScope()

describe('WebSocket agents that misbehave', () => {
  test('two registers with different node ids sent together on one socket: once it closes, neither node is left behind', async () => {
    const mls = server()
    // "held" is someone's live node: a register for it waits on a ping to its holder (1.5 s).
    const holder = await startWsAgent(mls.wsUrl, { nodeId: 'held', region: 'usa' })
    const peer = await openWs(mls.wsUrl)
    defer(peer.close)
    peer.send({ type: 'register', payload: { node_id: 'held', token: TOKEN, region: 'usa' } })
    peer.send({ type: 'register', payload: { node_id: 'second', token: TOKEN, region: 'usa' } })
    // The holder leaves while its node is being asked about: the first register then takes "held".
    holder.close()
    await waitFor(() => peer.messages.length >= 2, 'an answer to each register', 5000)
    // Taken in turn: the first takes the node its holder left, the second is refused as another id on this connection.
    expect(peer.messages.map((message) => [message.type, message.payload.node_id ?? message.payload.code])).toEqual([
      ['registered', 'held'],
      ['error', 'already_registered'],
    ])
    peer.close()
    await peer.closed
    await waitFor(() => mls.server.registry.get('held') === undefined, 'the node "held" to leave with its socket')
    // Whatever the server made of the two registers, nothing may outlive the socket they came over.
    await Bun.sleep(200)
    expect([...mls.server.registry.all()].map((client) => client.nodeId)).toEqual([])
  })

  test('the same register sent twice while its node is being asked about: the agent is registered once and keeps its socket', async () => {
    const mls = server()
    const holder = await startWsAgent(mls.wsUrl, { nodeId: 'twice', region: 'usa' })
    const peer = await openWs(mls.wsUrl)
    defer(peer.close)
    const register = { type: 'register', payload: { node_id: 'twice', token: TOKEN, region: 'usa' } }
    peer.send(register)
    peer.send(register)
    holder.close()
    await waitFor(() => peer.messages.length >= 2, 'an answer to each register', 5000)
    // The second is the same node on the same connection: a refresh, not a rival to be refused (4009).
    expect(peer.messages.map((message) => message.type)).toEqual(['registered', 'registered'])
    expect(peer.socket.readyState).toBe(WebSocket.OPEN)
    peer.socket.addEventListener('message', (event) => {
      const message = JSON.parse(String(event.data))
      if (message.type === 'task') peer.send({ type: 'task_response', payload: { task_id: message.task_id, response: 'from the peer' } })
    })
    const result = await postTask(mls.url, { region: 'usa', payload: 'still mine' })
    expect([result.status, result.text]).toEqual([200, '"from the peer"'])
  })
})
