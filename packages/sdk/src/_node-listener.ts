import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { WorkListener, WorkReply, WorkRequest } from './agent.ts'

/** `/work` on `node:http`, which Node, Bun and Deno all have. */
export function listenWithNodeHttp(port: number, handleWork: (request: WorkRequest) => Promise<WorkReply>): Promise<WorkListener> {
  const server = createServer((request, response) => void serve(request, response, handleWork))
  // The server's task_timeout bounds a task; Node's own request timeout (300 s) must not cut one first.
  server.requestTimeout = 0
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, () => {
      server.off('error', reject)
      resolve({
        port: (server.address() as AddressInfo).port,
        close: () =>
          new Promise((closed) => {
            server.close(() => closed())
            // Idle keep-alive connections would hold close() open; busy ones finish their answer first.
            server.closeIdleConnections()
          }),
      })
    })
  })
}

async function serve(request: IncomingMessage, response: ServerResponse, handleWork: (request: WorkRequest) => Promise<WorkReply>): Promise<void> {
  // The server cancels a task (or gives up on it) by closing the connection before the answer.
  const cut = new AbortController()
  response.on('close', () => {
    if (!response.writableFinished) cut.abort()
  })
  let body: Uint8Array | null
  try {
    const chunks: Buffer[] = []
    for await (const chunk of request) chunks.push(chunk as Buffer)
    body = new Uint8Array(Buffer.concat(chunks))
  } catch {
    body = null
  }
  const requestHeaders = new Headers()
  for (const [name, value] of Object.entries(request.headers)) if (typeof value === 'string') requestHeaders.set(name, value)
  const path = new URL(request.url ?? '/', 'http://agent').pathname
  const reply = await handleWork({ method: request.method ?? 'GET', path, headers: requestHeaders, body, signal: cut.signal })
  if (cut.signal.aborted) return
  const headers: Record<string, string> = {}
  reply.headers.forEach((value, name) => {
    headers[name] = value
  })
  response.writeHead(reply.status, headers)
  response.end(reply.body)
}
