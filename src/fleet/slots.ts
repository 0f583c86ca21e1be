/**
 * Agent slots (HAProxy's per-server `maxconn`, Hatchet's and Temporal's worker slots): an agent may
 * announce `max_in_flight`, and the server never has more of its tasks in flight on it. The registry
 * takes a full agent out of its balancers as it does a draining one, so a pick never even looks at
 * it, and puts it back the moment a task ends; the count itself is one integer on the client record,
 * so an agent that announces no slots costs what it did before.
 */

/** The part of a client record slots are about. */
export interface SlotHolder {
  inFlight: number
  /** Its slots; undefined: no limit. */
  maxInFlight?: number | undefined
}

/** Whether the client may be given one more task now by its slots (always, without a limit). */
export function hasSlot(client: SlotHolder): boolean {
  return client.maxInFlight === undefined || client.inFlight < client.maxInFlight
}

/**
 * Who may take a task waiting for a slot: the registry asks it each time a client has room (a task
 * ended, it joined, recovered, was undrained or announced more slots). It returns true when it gave
 * the client a waiting task, whose slot the registry then counts.
 */
export type SlotOffer<Client> = (client: Client) => boolean
