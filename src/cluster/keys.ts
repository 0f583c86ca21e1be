/** Every key and channel the cluster keeps in Redis, under one prefix (docs/cluster.md lists them). */
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

  /** A relayed task's large answer, set by its holder and read (then deleted) by its origin: pub/sub carries only its name. */
  spilled(relayKey: string): string {
    return `${this.prefix}spill:${relayKey}`
  }

  /** A stored task: a hash of its fields (state, claimed_by, finished_at, task, result). */
  task(id: string): string {
    return `${this.prefix}task:${id}`
  }

  /** Tasks waiting to run: a stream read by the consumer group TASK_GROUP, one consumer per instance. */
  get taskQueue(): string {
    return `${this.prefix}tasks:queue`
  }

  /** Finished tasks scored by when each expires: the max_results eviction order (the soonest to go first). */
  get finishedTasks(): string {
    return `${this.prefix}tasks:finished`
  }

  /** How many finished tasks were evicted, cluster-wide. */
  get evictedTasks(): string {
    return `${this.prefix}tasks:evicted`
  }

  /** News of stored tasks: one queued, one finished, one to cancel. */
  get taskEvents(): string {
    return `${this.prefix}tasks:events`
  }

  /** A random value set once and never expired: gone (or another value) means Redis lost its data since an instance last read it. */
  get marker(): string {
    return `${this.prefix}marker`
  }

  /** An owner's idempotency key: "<task id> <body hash>". */
  idempotency(owner: string, key: string): string {
    return `${this.prefix}idem:${owner}:${key}`
  }
}

/** The consumer group every instance reads the task queue through. */
export const TASK_GROUP = 'runners'
