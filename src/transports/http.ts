import type { HeaderPolicy } from '../answer-headers.ts'
import type { Deadline, Expirable } from '../deadlines.ts'
import type { Client } from '../registry.ts'
import { signatureHeaders } from '../signing.ts'
import { certificateFailure } from '../tls-failures.ts'
import { type Answer, AttemptError, type Transport, timedOut } from './types.ts'

/** What each call reads from the settings in force, so a reload applies to the next call. */
export interface HttpCallSettings {
  maxAnswerBytes: number
  /** The PEM bundle HTTPS agents are verified against (`agents.ca`); the system's CAs without it. */
  agentCa?: string
  /** Every call is signed with it (`signing_secret`, src/signing.ts). */
  signingSecret?: string
  /** Which of an answer's headers reach the caller (answers.pass_headers). */
  headerPolicy: HeaderPolicy
}

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
    private readonly settings: () => HttpCallSettings,
    /** Wall-clock ms, for the signature's timestamp. */
    private readonly now: () => number,
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
    const { maxAnswerBytes: limit, agentCa, signingSecret, headerPolicy } = this.settings()
    try {
      let response: Response
      const requestHeaders: Record<string, string> = { 'content-type': 'application/json', 'x-task-id': taskId }
      // Signed over the bytes fetch sends: encoded once here, so the HMAC and the wire cannot disagree.
      const body = signingSecret === undefined ? payloadJson : Buffer.from(payloadJson)
      if (signingSecret !== undefined) Object.assign(requestHeaders, signatureHeaders(signingSecret, body, this.now() / 1000))
      try {
        response = await fetch(workUrl(client), {
          method: 'POST',
          headers: requestHeaders,
          body,
          signal: abort.signal,
          // Bun's own idle limit (5 minutes) would cut an agent still working on a long task, and the
          // failure would look like an unreachable agent and be retried; task_timeout is the only limit.
          timeout: false,
          // Never follow an agent's redirect: the server would call an address nobody checked (SSRF).
          // A 3xx is the agent's answer, passed back as such (its Location is not on the allow-list).
          redirect: 'manual',
          ...(client.scheme === 'https' && agentCa !== undefined ? { tls: { ca: agentCa } } : {}),
        })
      } catch (error) {
        if (deadline.expired) throw timedOut()
        throw new AttemptError('unreachable', `cannot reach ${client.ip}:${client.port}: ${describeFetchFailure(error)}`)
      }
      const { headers } = response
      // fetch holds a plain body to its declared length; a chunked or compressed one (the length is
      // the compressed size) can grow past it, so that one is counted as it comes.
      const declaredLength = headers.has('content-encoding') || headers.has('transfer-encoding') ? null : headers.get('content-length')
      try {
        if (declaredLength !== null && Number(declaredLength) > limit) throw tooLarge(limit)
        const answer = declaredLength !== null ? await response.arrayBuffer() : await readAtMost(response, limit)
        // With signing on, 401 is the agent refusing the call, not its answer to the payload: the task did not run, so another client may run it.
        if (signingSecret !== undefined && response.status === 401) throw refusedSignature(answer)
        return { status: response.status, headers: headerPolicy.filterResponse(response.headers), body: answer }
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
  return `${client.scheme}://${host}:${client.port}/work`
}

function describeFetchFailure(error: unknown): string {
  const certificate = certificateFailure(error)
  // Said plainly: a private CA's agent is reachable, and only agents.ca is missing.
  return certificate ? `TLS verification failed, ${certificate}; set agents.ca if the agent's certificate comes from a private CA` : (error as Error).message
}

const REFUSAL_EXCERPT_CHARS = 200

function refusedSignature(body: ArrayBuffer): AttemptError {
  const text = new TextDecoder().decode(body.slice(0, REFUSAL_EXCERPT_CHARS * 4)).slice(0, REFUSAL_EXCERPT_CHARS)
  return new AttemptError('refused', `answered 401: the agent refused the signed call${text ? ` (${text.replace(/\s+/g, ' ').trim()})` : ''}`)
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
