/**
 * Agent slots (HAProxy's per-server `maxconn`, Hatchet's and Temporal's worker slots): an agent may
 * announce `max_in_flight`, and the server never has more of its tasks in flight on it. The registry
 * takes a full agent out of its balancers as it does a draining one, so a pick never even looks at
 * it, and puts it back the moment a task ends; the count itself is one integer on the client record,
 * so an agent that announces no slots costs what it did before.
 *
 * In a cluster (docs/routing.md "Slots in a cluster"): a WebSocket agent's slots are counted by the
 * one instance that holds its socket, which tells the others when the agent is full (`holderFull`)
 * and makes a relayed task beyond them wait for the agent's next free slot. An HTTP agent is called
 * by every instance directly, so each instance keeps to its share of the slots (`slotShare`).
 */

/** The part of a client record slots are about. */
export interface SlotHolder {
  inFlight: number
  /** Its slots; undefined: no limit. */
  maxInFlight?: number | undefined
  /** This instance's share of an HTTP agent's slots in a cluster (see httpSlotShare); undefined: all of them. */
  slotShare?: number | undefined
  /** Another instance holds it and says all its slots are taken there. */
  holderFull?: boolean | undefined
}

/** How many of its tasks this instance may have in flight on the client; undefined: no limit. */
export function slotLimit(client: SlotHolder): number | undefined {
  return client.slotShare ?? client.maxInFlight
}

/** Whether the client may be given one more task now by its slots (always, without a limit). */
export function hasSlot(client: SlotHolder): boolean {
  if (client.holderFull === true) return false
  const limit = client.slotShare ?? client.maxInFlight
  return limit === undefined || client.inFlight < limit
}

/**
 * An HTTP agent's slots as one of `instances` instances may use them: floor(N / instances), at
 * least 1. The instances together never have more than N in flight on it while N ≥ instances, and
 * never more than one each (so `instances` in all) when there are more instances than slots.
 */
export function httpSlotShare(maxInFlight: number, instances: number): number {
  return Math.max(1, Math.floor(maxInFlight / Math.max(1, instances)))
}

/**
 * Who may take a task waiting for a slot: the registry asks it each time a client has room (a task
 * ended, it joined, recovered, was undrained or announced more slots). It returns true when it gave
 * the client a waiting task, whose slot the registry then counts.
 */
export type SlotOffer<Client> = (client: Client) => boolean
