import type { HeaderPolicy } from '../answer-headers.ts'
import type { Deadline, Expirable } from '../deadlines.ts'
import type { Client } from '../registry.ts'
import { type Answer, AttemptError, type Transport, timedOut } from './types.ts'

/** fetch needs an AbortSignal; one object is both the controller and the deadline's watcher. */
class RequestAbort extends AbortController implements Expirable {
  expire(): void {
    this.abort()
  }
}

/** POSTs the payload to the client's `/work` and hands back its status, content type and body. */
export class HttpTransport implements Transport {
  /** Calls to agents under way: Bun runs only so many fetches at once and queues the rest unseen. */
  inFlight = 0
  private peak = 0

  constructor(
    private readonly maxAnswerBytes: () => number,
    /** Which of an answer's headers reach the caller (answers.pass_headers, as reloaded). */
    private readonly headerPolicy: () => HeaderPolicy,
  ) {}

  /** The most calls under way at once since the last call of this. */
  takePeak(): number {
    const peak = this.peak
    this.peak = this.inFlight
    return peak
  }

  async send(client: Client, taskId: string, payloadJson: string, deadline: Deadline): Promise<Answer> {
    if (deadline.expired) throw timedOut()
    const abort = new RequestAbort()
    deadline.watch(abort)
    if (++this.inFlight > this.peak) this.peak = this.inFlight
    try {
      let response: Response
      try {
        response = await fetch(workUrl(client), {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-task-id': taskId },
          body: payloadJson,
          signal: abort.signal,
          // Bun's own idle limit (5 minutes) would cut an agent still working on a long task, and the
          // failure would look like an unreachable agent and be retried; task_timeout is the only limit.
          timeout: false,
        })
      } catch (error) {
        if (deadline.expired) throw timedOut()
        throw new AttemptError('unreachable', `cannot reach ${client.ip}:${client.port}: ${(error as Error).message}`)
      }
      const limit = this.maxAnswerBytes()
      const { headers } = response
      // fetch holds a plain body to its declared length; a chunked or compressed one (the length is
      // the compressed size) can grow past it, so that one is counted as it comes.
      const declaredLength = headers.has('content-encoding') || headers.has('transfer-encoding') ? null : headers.get('content-length')
      try {
        if (declaredLength !== null && Number(declaredLength) > limit) throw tooLarge(limit)
        const body = declaredLength !== null ? await response.arrayBuffer() : await readAtMost(response, limit)
        return { status: response.status, headers: this.headerPolicy().filterResponse(response.headers), body }
      } catch (error) {
        if (error instanceof AttemptError) {
          // Stop the transfer rather than drain what we will not use.
          abort.abort()
          throw error
        }
        if (deadline.expired) throw new AttemptError('timeout', "timed out reading the client's answer")
        throw new AttemptError('disconnected', `connection lost before the answer: ${(error as Error).message}`)
      }
    } finally {
      this.inFlight--
      deadline.unwatch(abort)
    }
  }
}

function workUrl(client: Client): string {
  const host = client.ip.includes(':') && !client.ip.startsWith('[') ? `[${client.ip}]` : client.ip
  return `http://${host}:${client.port}/work`
}

function tooLarge(limit: number): AttemptError {
  return new AttemptError('too_large', `answered more than max_answer_bytes (${limit} bytes)`)
}

/** The body, read chunk by chunk; fails with `too_large` as soon as it passes `limit` bytes. */
async function readAtMost(response: Response, limit: number): Promise<ArrayBuffer> {
  if (!response.body) return new ArrayBuffer(0)
  const reader = response.body.getReader()
  const chunks: Uint8Array[] = []
  let size = 0
  for (let read = await reader.read(); !read.done; read = await reader.read()) {
    size += read.value.byteLength
    if (size > limit) {
      void reader.cancel()
      throw tooLarge(limit)
    }
    chunks.push(read.value)
  }
  return Bun.concatArrayBuffers(chunks)
}
