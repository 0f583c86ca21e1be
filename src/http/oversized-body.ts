import type { Config } from '../config/config.ts'

/** The config keys that bound what is read of a request body. */
export type BodyLimits = Pick<Config, 'max_body_bytes' | 'oversized_body'>

/**
 * Reads and drops the rest of a body over max_body_bytes, before its 413 is sent — or a body the server
 * refused before reading it (see afterUnreadBody). A client that writes
 * its whole body before reading the answer (Node's fetch, Python's urllib, most SDKs) gets EPIPE instead
 * of the answer when the connection closes while it still writes; nginx's lingering close, bounded. A
 * body declared longer than `discard_bytes` is not read at all (its client could not be answered
 * anyway), a chunked one is read up to it, and neither for longer than `discard_time`. `received` bytes
 * were already read through `reader`, when reading had started; `maxTimeS` may bound it tighter than
 * discard_time. True if the body was read to its end (the connection can serve the client's next
 * request), false if a bound cut it short.
 */
export async function discardOversizedBody(
  request: Request,
  limits: BodyLimits,
  reader: ReadableStreamDefaultReader<Uint8Array> | undefined = request.body?.getReader(),
  received = 0,
  maxTimeS = limits.oversized_body.discard_time,
): Promise<boolean> {
  const { discard_bytes: maxBytes } = limits.oversized_body
  const declared = request.headers.get('content-length')
  if (reader === undefined) return true
  if (declared !== null && Number(declared) > maxBytes) return false
  let timedOut = false
  // Cancelling ends the pending read as done: the time bound holds however slowly the client sends.
  const timer = setTimeout(() => {
    timedOut = true
    void reader.cancel()
  }, maxTimeS * 1000)
  try {
    while (received <= maxBytes) {
      const { done, value } = await reader.read()
      if (done) return !timedOut
      received += value.byteLength
    }
    void reader.cancel()
  } catch {
    // The client went away mid-body (or Bun refused a malformed chunk and answers 400 itself): the answer is sent all the same.
  } finally {
    clearTimeout(timer)
  }
  return false
}

/**
 * How long a refusal waits for the rest of a body it did not read. Bun can answer only after the body is
 * read (an answer sent first closes the connection under a client still writing), so the wait delays the
 * answer for clients that read while they write (curl stops its upload when the refusal comes): a body
 * sent at once is in long before this, a slow upload is answered and cut off after it, and a refused
 * source cannot hold connections for discard_time (nginx's lingering close reads for at most 5 s between
 * packets).
 */
export const REFUSAL_DISCARD_S = 2

/**
 * `refusal` (401, 403, 415, 429, 404…), once the body it left unread is read and dropped within
 * discard_bytes and REFUSAL_DISCARD_S, for the same clients the 413 reads it for — Python's urllib sending
 * 900 KiB with a wrong token otherwise gets `Broken pipe` instead of the 401. A bound that left part of
 * the body unread closes the connection after it (`Connection: close`). Only refusals pay for it, never a task.
 */
export async function afterUnreadBody(request: Request, refusal: Response, limits: BodyLimits): Promise<Response> {
  const { body } = request
  if (body === null || request.bodyUsed || body.locked) return refusal
  const maxTimeS = Math.min(REFUSAL_DISCARD_S, limits.oversized_body.discard_time)
  if (!(await discardOversizedBody(request, limits, body.getReader(), 0, maxTimeS))) refusal.headers.set('connection', 'close')
  return refusal
}
