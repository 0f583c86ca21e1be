import type { Server } from 'bun'
import { errorResponse, shuttingDown } from '../errors.ts'
import { requestPath } from '../http/request-path.ts'
import { type CertificatePair, certificateDatesWarning, describeCertificate } from '../security/pem-files.ts'
import type { SocketData } from '../transports/ws.ts'
import type { ServerContext } from './context.ts'
import type { EdgeWiring } from './edge-wiring.ts'
import { Listeners } from './listeners.ts'

/**
 * Listens on the port: the task route on Bun's own router (the hot path skips Hono), the WebSocket
 * upgrade, everything else through the Hono app; with a certificate, HTTPS and WSS. While the server
 * stops, every request gets refuseWhileStopping's answer instead.
 */
export function listenOn(
  ctx: ServerContext,
  edges: EdgeWiring,
  where: { port: number; host: string | undefined; certificate: CertificatePair | undefined },
): Listeners<SocketData> {
  const { state, report } = ctx
  const { app, gateway, taskRoute } = edges
  const { ws } = ctx.started

  /**
   * A request that arrives during the grace period: 503 shutting_down, except /status, which says
   * "Stopping". Either way with `Connection: close`, which Bun honours by closing the connection after
   * the answer, so the client opens no further request on it.
   */
  async function refuseWhileStopping(request: Request, server: Server<SocketData>): Promise<Response> {
    if (request.method === 'GET' && requestPath(request) === '/status') {
      const response = await app.fetch(request, server)
      const headers = new Headers(response.headers)
      headers.set('connection', 'close')
      return new Response(response.body, { status: response.status, headers })
    }
    return errorResponse(shuttingDown(), report, { connection: 'close' })
  }

  /** One instance on the port. A certificate renewal starts another (src/server/listeners.ts). */
  const serveOn = (listenPort: number, tls: CertificatePair | undefined) =>
    Bun.serve<SocketData>({
      port: listenPort,
      ...(tls ? { tls } : {}),
      hostname: where.host,
      // Bun would otherwise let a second server bind the same port, and the kernel split connections between the two.
      reusePort: false,
      routes: {
        '/task/request': {
          POST: (request: Request, server: Server<SocketData>) => (state.stopping ? refuseWhileStopping(request, server) : taskRoute(request, server)),
        },
        ...(ws.enabled
          ? {
              [ws.path]: (request: Request, server: Server<SocketData>) =>
                state.stopping ? refuseWhileStopping(request, server) : gateway.upgrade(request, server),
            }
          : {}),
      },
      fetch: (request, server) => (state.stopping ? refuseWhileStopping(request, server) : app.fetch(request, server)),
      // Bun answers a Content-Length over this with an empty 413 before our code runs: max_body_bytes,
      // checked by declared length before reading and counted while a chunked body streams, answers in JSON instead.
      maxRequestBodySize: Number.POSITIVE_INFINITY,
      websocket: gateway.handler,
      // Never Bun's HTML error page: whatever escapes the app still answers in JSON.
      development: false,
      error: (error) => errorResponse(error, report),
    })
  let listeners: Listeners<SocketData>
  try {
    listeners = new Listeners<SocketData>(serveOn, where.port, where.certificate)
  } catch (error) {
    // A port taken by another process is a one-line start-up failure, not a stack trace.
    if ((error as { code?: unknown }).code === 'EADDRINUSE') throw new Error(`port ${where.port} is already in use`)
    throw error
  }
  if (where.certificate) {
    ctx.log(`[mls] TLS: serving ${describeCertificate(where.certificate)}`)
    warnOfCertificateDates(ctx.log, where.certificate, ctx.started.tls?.cert ?? '')
  }
  return listeners
}

/** Says so, as a warning, when the certificate now served is expired or not valid yet. */
export function warnOfCertificateDates(log: ServerContext['log'], certificate: CertificatePair, certPath: string): void {
  const warning = certificateDatesWarning(certificate, certPath, new Date())
  if (warning) log(`[mls] warning: ${warning}`, { level: 'warn' })
}
