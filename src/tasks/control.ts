import type { Client } from '../fleet/registry.ts'
import type { Deadline } from './deadlines.ts'

/**
 * A handle on one running task, for cancelling it (DELETE /task/{id}): the dispatcher fills in the
 * task's deadline and the client it is trying, and stops at the next step once cancelled. Expiring
 * the deadline cuts the attempt under way the way a timeout does, but the dispatcher counts it
 * against no client.
 */
export class TaskControl {
  cancelled = false
  /** A stored task taken over from an instance that had started it: its agent may have it already. */
  startedElsewhere = false
  deadline: Deadline | undefined = undefined
  client: Client | undefined = undefined

  cancel(): void {
    this.cancelled = true
    this.deadline?.fire()
  }
}
