import { describe, expect, test } from 'bun:test'
import { TurnBatches } from '../../../src/transports/turn-batches.ts'

/** The end of the current event-loop turn: what setImmediate callbacks scheduled before it have run. */
const endOfTurn = () => new Promise<void>((resolve) => setImmediate(resolve))

describe('turn batches', () => {
  test('lines added during a turn are flushed once each at its end, in the order they were added', async () => {
    const flushed: string[] = []
    const turn = new TurnBatches<string>((line) => void flushed.push(line))
    turn.add('a')
    turn.add('b')
    expect(flushed).toEqual([])
    await endOfTurn()
    expect(flushed).toEqual(['a', 'b'])
    await endOfTurn()
    expect(flushed).toEqual(['a', 'b'])
  })

  test('a line added while the batch flushes goes out at the end of the next turn, not lost', async () => {
    const flushed: string[] = []
    const turn: TurnBatches<string> = new TurnBatches<string>((line) => {
      flushed.push(line)
      if (line === 'a') turn.add('again')
    })
    turn.add('a')
    await endOfTurn()
    expect(flushed).toEqual(['a'])
    await endOfTurn()
    expect(flushed).toEqual(['a', 'again'])
  })
})
