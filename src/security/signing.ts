import { createHmac, timingSafeEqual } from 'node:crypto'

/**
 * Signed calls to HTTP agents. The server sends `X-Moonlight-Timestamp: <unix seconds>` and
 * `X-Moonlight-Signature: sha256=<hex HMAC-SHA256 of timestamp + "." + body>` with every call; an
 * agent that knows the secret checks both before it runs the task. The timestamp inside the HMAC
 * bounds how long a captured call can be replayed.
 */

export const TIMESTAMP_HEADER = 'x-moonlight-timestamp'
export const SIGNATURE_HEADER = 'x-moonlight-signature'
/** How far a call's timestamp may be from the agent's clock, either way: room for clock skew and a slow network, not for a replay next week. */
export const SIGNATURE_TOLERANCE_S = 300

const SCHEME = 'sha256='

/** `sha256=<hex>` for `body` (the exact bytes sent) at `timestamp` (unix seconds, as the header writes it). */
export function sign(secret: string, timestamp: number | string, body: string | Uint8Array): string {
  return `${SCHEME}${createHmac('sha256', secret).update(`${timestamp}.`).update(body).digest('hex')}`
}

/** The two headers a signed call carries. */
export function signatureHeaders(secret: string, body: string | Uint8Array, nowS: number): Record<string, string> {
  const timestampS = Math.floor(nowS)
  return { [TIMESTAMP_HEADER]: String(timestampS), [SIGNATURE_HEADER]: sign(secret, timestampS, body) }
}

export type Verdict = { ok: true } | { ok: false; reason: string }

/**
 * Checks a call's signature against `body` (the bytes received) and its timestamp against `nowS`.
 * The comparison takes the same time wherever the signatures differ, so timing tells nothing of the expected one.
 */
export function verify(secret: string, headers: Pick<Headers, 'get'>, body: string | Uint8Array, nowS: number, toleranceS = SIGNATURE_TOLERANCE_S): Verdict {
  const timestamp = headers.get(TIMESTAMP_HEADER)
  const signature = headers.get(SIGNATURE_HEADER)
  if (timestamp === null || signature === null)
    return { ok: false, reason: `the call is not signed (${TIMESTAMP_HEADER} and ${SIGNATURE_HEADER} are required)` }
  if (!/^\d{1,15}$/.test(timestamp)) return { ok: false, reason: `${TIMESTAMP_HEADER} must be unix seconds` }
  const skewS = Number(timestamp) - nowS
  if (Math.abs(skewS) > toleranceS)
    return { ok: false, reason: `the timestamp is ${Math.round(Math.abs(skewS))} s ${skewS < 0 ? 'old' : 'ahead'} (at most ${toleranceS} s allowed)` }
  if (!signature.startsWith(SCHEME)) return { ok: false, reason: `${SIGNATURE_HEADER} must start with "${SCHEME}"` }
  const expected = Buffer.from(sign(secret, timestamp, body))
  const given = Buffer.from(signature)
  // timingSafeEqual needs equal lengths; the length of a hex SHA-256 is no secret.
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return { ok: false, reason: 'the signature does not match' }
  return { ok: true }
}
