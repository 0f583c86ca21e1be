/** Every key and channel the cluster keeps in Redis, under one prefix (README "Cluster mode" lists them). */
export class ClusterKeys {
  constructor(readonly prefix: string) {}

  /** An instance's presence: JSON about it, with a TTL of instance_ttl; gone means the instance is dead. */
  instance(id: string): string {
    return `${this.prefix}instance:${id}`
  }

  get instancePattern(): string {
    return `${this.prefix}instance:*`
  }

  /** The clients an instance holds: a hash, node id → JSON. */
  clients(id: string): string {
    return `${this.prefix}clients:${id}`
  }

  /** Changes to any instance's clients. */
  get fleet(): string {
    return `${this.prefix}fleet`
  }

  /** Tasks relayed to an instance for its WebSocket agents. */
  relay(id: string): string {
    return `${this.prefix}relay:${id}`
  }

  /** Answers to the tasks an instance relayed. */
  reply(id: string): string {
    return `${this.prefix}reply:${id}`
  }
}
