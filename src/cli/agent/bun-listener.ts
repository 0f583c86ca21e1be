import type { Listen } from '../../../packages/sdk/src/agent.ts'
import { jsonResponse } from '../../errors.ts'
import type { CertificatePair } from '../../security/pem-files.ts'
import { verify } from '../../security/signing.ts'
import type { ErrorBody } from '../../wire/errors.ts'

export interface BunListenerOptions {
  /** Serves /work over HTTPS with this certificate. */
  tls?: CertificatePair
  /** Runs only calls signed with this secret; anything else gets 401 before its payload is read. */
  signingSecret?: string
  log: (line: string) => void
  warn: (line: string) => void
}

/**
 * `moonlight agent --http`'s `/work`: `Bun.serve`, for HTTPS (`--tls-cert`), signed calls
 * (`--signing-secret`) and no idle limit on a long task; the SDK's agent answers what passes.
 */
export function listenWithBun(options: BunListenerOptions): Listen {
  const { tls, signingSecret } = options
  return async (port, handleWork) => {
    const server = Bun.serve({
      port,
      ...(tls ? { tls } : {}),
      // Never Bun's development error page (it shows the agent's source and stack): whatever escapes answers in JSON.
      development: false,
      error: (error) => {
        options.warn(`[agent] /work failed: ${(error as Error)?.stack ?? String(error)}`)
        const failure: ErrorBody = { error: 'the agent failed', code: 'internal' }
        return jsonResponse(failure, 500)
      },
      fetch: async (request, bunServer) => {
        let body: Uint8Array | null
        try {
          body = await request.bytes()
        } catch {
          body = null
        }
        const path = new URL(request.url).pathname
        // Checked before anything else: an unsigned call must not learn whether its payload would parse, nor run.
        if (signingSecret !== undefined && path === '/work' && request.method === 'POST' && body !== null) {
          const verdict = verify(signingSecret, request.headers, body, Date.now() / 1000)
          if (!verdict.ok) {
            options.warn(`[agent] refused a call to /work: ${verdict.reason}`)
            const refusal: ErrorBody = { error: `refused: ${verdict.reason}`, code: 'invalid_signature' }
            return jsonResponse(refusal, 401)
          }
        }
        // Bun's idleTimeout would cut a long task; the server's task_timeout bounds it instead.
        bunServer.timeout(request, 0)
        // The server cuts the connection when it cancels the task (or its deadline passes): Bun aborts request.signal.
        const reply = await handleWork({ method: request.method, path, headers: request.headers, body, signal: request.signal })
        return new Response(reply.body, { status: reply.status, headers: reply.headers })
      },
    })
    const how = [tls ? 'over HTTPS' : '', signingSecret ? 'signed calls only' : ''].filter(Boolean).join(', ')
    options.log(`[agent] serving POST /work on port ${server.port}${how ? ` (${how})` : ''}`)
    return {
      port: server.port!,
      scheme: tls ? 'https' : 'http',
      // Not forced: the last answers are still being written when their jobs end.
      close: () => server.stop(),
    }
  }
}
