import type { Deadline, Expirable } from '../deadlines.ts'
import type { Client } from '../registry.ts'
import { type Answer, AttemptError, timedOut, type Transport } from './types.ts'

/** fetch needs an AbortSignal; one object is both the controller and the deadline's watcher. */
class RequestAbort extends AbortController implements Expirable {
  expire(): void {
    this.abort()
  }
}

/** POSTs the payload to the client's `/work` and hands back its status, content type and body. */
export class HttpTransport implements Transport {
  async send(client: Client, taskId: string, payloadJson: string, deadline: Deadline): Promise<Answer> {
    if (deadline.expired) throw timedOut()
    const abort = new RequestAbort()
    deadline.watch(abort)
    try {
      let response: Response
      try {
        response = await fetch(workUrl(client), {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-task-id': taskId },
          body: payloadJson,
          signal: abort.signal,
        })
      } catch (error) {
        if (deadline.expired) throw timedOut()
        throw new AttemptError('unreachable', `cannot reach ${client.ip}:${client.port}: ${(error as Error).message}`)
      }
      try {
        const body = await response.arrayBuffer()
        const contentType = response.headers.get('content-type')
        return { status: response.status, headers: contentType ? { 'content-type': contentType } : {}, body }
      } catch (error) {
        if (deadline.expired) throw new AttemptError('timeout', 'timed out reading the client\'s answer')
        throw new AttemptError('disconnected', `connection lost before the answer: ${(error as Error).message}`)
      }
    } finally {
      deadline.unwatch(abort)
    }
  }
}

function workUrl(client: Client): string {
  const host = client.ip.includes(':') && !client.ip.startsWith('[') ? `[${client.ip}]` : client.ip
  return `http://${host}:${client.port}/work`
}
