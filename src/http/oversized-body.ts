import type { Config } from '../config/config.ts'

/** The config keys that bound what is read of a request body. */
export type BodyLimits = Pick<Config, 'max_body_bytes' | 'oversized_body'>

/**
 * Reads and drops the rest of a body over max_body_bytes, before its 413 is sent. A client that writes
 * its whole body before reading the answer (Node's fetch, Python's urllib, most SDKs) gets EPIPE instead
 * of the answer when the connection closes while it still writes; nginx's lingering close, bounded. A
 * body declared longer than `discard_bytes` is not read at all (its client could not be answered
 * anyway), a chunked one is read up to it, and neither for longer than `discard_time`. `received` bytes
 * were already read through `reader`, when reading had started.
 */
export async function discardOversizedBody(
  request: Request,
  limits: BodyLimits,
  reader: ReadableStreamDefaultReader<Uint8Array> | undefined = request.body?.getReader(),
  received = 0,
): Promise<void> {
  const { discard_bytes: maxBytes, discard_time: maxTimeS } = limits.oversized_body
  const declared = request.headers.get('content-length')
  if (reader === undefined || (declared !== null && Number(declared) > maxBytes)) return
  // Cancelling ends the pending read as done: the time bound holds however slowly the client sends.
  const timer = setTimeout(() => void reader.cancel(), maxTimeS * 1000)
  try {
    while (received <= maxBytes) {
      const { done, value } = await reader.read()
      if (done) return
      received += value.byteLength
    }
    void reader.cancel()
  } catch {
    // The client went away mid-body (or Bun refused a malformed chunk and answers 400 itself): the 413 is thrown all the same.
  } finally {
    clearTimeout(timer)
  }
}
