/**
 * Messages that wait for the end of this event-loop turn to go out together: one write or one
 * publish per line (a socket, a holder, an origin) for all it was given during the turn, instead of
 * one per message, which at load is most of a message's cost. A line is added once, on its first
 * message of the turn, and keeps its own queue; `flushLine` sends it. One scheduled callback per
 * turn, however many lines. The WebSocket transport's outbox and both sides of the cluster relay
 * batch this way; each sends a message at once instead when its line has nothing else in flight
 * (at low load, every message), so this costs nothing there.
 */
export class TurnBatches<Line> {
  private due: Line[] = []
  private spare: Line[] = []
  private scheduled = false

  constructor(private readonly flushLine: (line: Line) => void) {}

  /** `line` got its first message of this turn: it is flushed at the end of the turn. */
  add(line: Line): void {
    this.due.push(line)
    if (this.scheduled) return
    this.scheduled = true
    setImmediate(this.flush)
  }

  private readonly flush = (): void => {
    this.scheduled = false
    const due = this.due
    // Swapped, not emptied afterwards: a line given something while this one flushes goes out at the end of the next turn.
    this.due = this.spare
    for (const line of due) this.flushLine(line)
    due.length = 0
    this.spare = due
  }
}
