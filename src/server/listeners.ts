import type { Server } from 'bun'
import type { CertificatePair } from '../security/pem-files.ts'

/**
 * The server's `Bun.serve` instances on its one port. Bun cannot change a running server's
 * certificate: `server.reload()` swaps handlers only and ignores a `tls` passed to it (checked on
 * Bun 1.4.5; oven-sh/bun#43815). So a renewal listens anew: the current instance stops accepting, a new
 * one with the new certificate takes the port in the same tick, and the old one is retired — it keeps
 * the connections it holds (WebSockets above all, which stay registered and keep getting tasks and
 * broadcasts) until they end. Its idle keep-alive connections close, so callers reconnect and meet the new certificate.
 */
export class Listeners<Data> {
  private current: Server<Data>
  private certificate: CertificatePair | undefined
  private retired: Server<Data>[] = []
  private accepting = true

  constructor(
    /** Starts one instance on `port`, with `tls` when given. */
    private readonly listen: (port: number, tls: CertificatePair | undefined) => Server<Data>,
    port: number,
    certificate: CertificatePair | undefined,
  ) {
    this.current = listen(port, certificate)
    this.certificate = certificate
  }

  /** The instance accepting connections now. */
  get server(): Server<Data> {
    return this.current
  }

  /**
   * Serves `certificate` to every new connection from now on; false if it is the one served already,
   * or if the server has stopped accepting (a SIGHUP during a stop must not open the port again).
   * If the new instance cannot listen, the old certificate is served again by a fresh one and the error is thrown.
   */
  renew(certificate: CertificatePair): boolean {
    if (!this.accepting) return false
    if (this.certificate && certificate.cert === this.certificate.cert && certificate.key === this.certificate.key) return false
    const previous = this.current
    // The port it got, which differs from the one asked for when that was 0.
    const port = previous.port ?? 0
    // Stops listening at once, connections kept: the port is free for the next instance.
    void previous.stop(false)
    this.retired.push(previous)
    try {
      this.current = this.listen(port, certificate)
    } catch (error) {
      this.current = this.listen(port, this.certificate)
      throw error
    }
    this.certificate = certificate
    this.dropFinished()
    return true
  }

  /** Publishes to a topic's subscribers on every instance: a WebSocket stays with the one it connected to. */
  publish(topic: string, message: string): void {
    this.current.publish(topic, message)
    for (const server of this.retired) server.publish(topic, message)
  }

  /** Requests being answered, on every instance. */
  get pendingRequests(): number {
    let pending = this.current.pendingRequests
    for (const server of this.retired) pending += server.pendingRequests
    return pending
  }

  /** Stops accepting; connections stay (busy ones close once answered, idle ones at once). */
  stopListening(): void {
    this.accepting = false
    for (const server of [this.current, ...this.retired]) void server.stop(false)
  }

  /** Closes every connection that is left. */
  async close(): Promise<void> {
    await Promise.all([this.current, ...this.retired].map((server) => server.stop(true)))
  }

  /** A retired instance whose last connection has ended is released. */
  private dropFinished(): void {
    this.retired = this.retired.filter((server) => {
      if (server.pendingRequests > 0 || server.pendingWebSockets > 0) return true
      void server.stop(true)
      return false
    })
  }
}
