/**
 * The path of a request, whatever its Host. Bun gives a request without a usable Host (none, as
 * HTTP/1.0 allows; empty; or one it cannot parse) a path-only url: "/healthz?x=1". Any other url
 * starts with its scheme. Hono's own path parser skips a "scheme://host" that such a url lacks
 * ("/healthz" became "z"), and `new URL` refuses it.
 */
export function requestPath(request: Request): string {
  const { url } = request
  // The usual url: the path starts after "scheme://host".
  const start = url.charCodeAt(0) === SLASH ? 0 : url.indexOf('/', url.indexOf('//') + 2)
  if (start === -1) return '/'
  const query = url.indexOf('?', start)
  return query === -1 ? url.slice(start) : url.slice(start, query)
}

const SLASH = 0x2f
