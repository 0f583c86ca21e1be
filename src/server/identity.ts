import { hostname } from 'node:os'

/**
 * This instance's name among others and the URL it advertises. A default names the port listened on,
 * known only once listening (port 0 picks one): until `settle`, it names the port asked for. One
 * object that everyone reads, rather than a string copied into each part and patched afterwards.
 */
export class InstanceIdentity {
  instanceId: string
  advertiseUrl = ''

  constructor(
    /** The id given (options or cluster.instance_id); undefined: the host name and port. */
    private readonly givenId: string | undefined,
    /** cluster.advertise_url; undefined: the host name, port and scheme listened on. */
    private readonly givenUrl: string | undefined,
    askedPort: number,
  ) {
    this.instanceId = givenId ?? `${hostname()}:${askedPort}`
  }

  /** Once listening: the defaults name the port and scheme really used. */
  settle(port: number, tls: boolean): void {
    this.instanceId = this.givenId ?? `${hostname()}:${port}`
    this.advertiseUrl = this.givenUrl ?? `${tls ? 'https' : 'http'}://${hostname()}:${port}`
  }
}
