/**
 * The OpenSSL codes Bun's fetch and WebSocket (on the error event's `error`) give as `error.code`
 * to report when a peer's certificate fails verification: untrusted, self-signed, expired, not for that name.
 */
const CERTIFICATE_CODE = /^(?:ERR_TLS_CERT_ALTNAME_INVALID|[A-Z_]*(?:CERT|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER)[A-Z_]*)$/

/**
 * One line on why a TLS peer's certificate was refused (`certificate not trusted: self signed certificate
 * (DEPTH_ZERO_SELF_SIGNED_CERT)`), or undefined when `error` is no certificate failure. Callers add what to do about it.
 */
export function certificateFailure(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code
  if (typeof code !== 'string' || !CERTIFICATE_CODE.test(code)) return undefined
  const message = error instanceof Error ? error.message : String(error)
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return `certificate not valid for this host name (${code})`
  // A WebSocket's message wraps the reason: "WebSocket connection to '…' failed: TLS handshake failed: <reason> <CODE>".
  const reason = message.replace(/^.*failed:\s*/, '').trim()
  return `certificate not trusted: ${reason || 'verification failed'} (${code})`
}

/** What the CLI and the agents say to do when the server's certificate is not trusted: it usually comes from a private CA. */
export const SERVER_CA_HINT = 'pass --ca FILE (or set MLS_CA) if its certificate comes from a private CA'
