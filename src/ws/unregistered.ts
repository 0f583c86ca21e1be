/**
 * Sockets that have not registered yet, with when each opened, oldest first. Pure: the clock is
 * passed in, and one sweep a second replaces a timer per socket.
 */
export class Unregistered<Socket> {
  /** A Map keeps insertion order, which is opening order: the oldest come first. */
  private readonly openedAtMs = new Map<Socket, number>()

  get size(): number {
    return this.openedAtMs.size
  }

  add(socket: Socket, nowMs: number): void {
    this.openedAtMs.set(socket, nowMs)
  }

  /** The socket registered, joined the monitor feed or closed. */
  delete(socket: Socket): void {
    this.openedAtMs.delete(socket)
  }

  /** Removes and returns the sockets open for `limitMs` or longer. */
  takeOverdue(nowMs: number, limitMs: number): Socket[] {
    const overdue: Socket[] = []
    for (const [socket, openedAtMs] of this.openedAtMs) {
      // Oldest first, so the first one still in time ends the sweep: its cost is what it closes.
      if (nowMs - openedAtMs < limitMs) break
      this.openedAtMs.delete(socket)
      overdue.push(socket)
    }
    return overdue
  }
}
