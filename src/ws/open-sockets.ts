/** What OpenSockets needs of a socket: a field of its own data for its place in the list. */
export interface Placed {
  data: { openAt: number }
}

/**
 * Every open socket, in an array where each socket knows its place (`data.openAt`, -1 once out):
 * adding, removing and asking whether one is still open cost O(1), as with a Set, without an
 * entry of a Set per socket (about 130 bytes of heap each, more than the rest of an idle socket's
 * bookkeeping here). The order means nothing: the last socket takes a removed one's place.
 */
export class OpenSockets<Socket extends Placed> implements Iterable<Socket> {
  private readonly list: Socket[] = []

  get size(): number {
    return this.list.length
  }

  add(socket: Socket): void {
    if (this.has(socket)) return
    socket.data.openAt = this.list.length
    this.list.push(socket)
  }

  delete(socket: Socket): void {
    if (!this.has(socket)) return
    const last = this.list.pop()!
    if (last !== socket) {
      this.list[socket.data.openAt] = last
      last.data.openAt = socket.data.openAt
    }
    socket.data.openAt = -1
  }

  has(socket: Socket): boolean {
    return this.list[socket.data.openAt] === socket
  }

  /**
   * Walks the list from its end, so what is done to each socket may remove it (a terminate closes it
   * at once) without a copy of the list: the last socket, already visited, takes its place. Every
   * socket open throughout the walk is visited; one moved by the removal of another may be visited twice.
   */
  *[Symbol.iterator](): Iterator<Socket> {
    for (let at = this.list.length - 1; at >= 0; at--) {
      const socket = this.list[at]
      if (socket !== undefined) yield socket
    }
  }
}
