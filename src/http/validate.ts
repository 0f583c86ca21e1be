import { zValidator } from '@hono/zod-validator'
import { createMiddleware } from 'hono/factory'
import type { z } from 'zod'
import { MoonlightError } from '../errors.ts'

/** Zod issues as `{ path, message }`, the shape every 400 and WebSocket error uses. */
export function describeIssues(error: z.core.$ZodError): Array<{ path: string; message: string }> {
  return error.issues.map((issue) => ({ path: issue.path.join('.') || '(body)', message: issue.message }))
}

/** One line for a WebSocket error message or a log. */
export function summarizeIssues(error: z.core.$ZodError): string {
  return describeIssues(error)
    .map((issue) => `${issue.path}: ${issue.message}`)
    .join('; ')
}

/**
 * Hono's JSON validator silently sees `{}` when the content type is not JSON (curl -d sends a
 * form type by default), which would surface as a puzzling "payload is required": say what is wrong.
 */
export const requireJson = createMiddleware(async (c, next) => {
  const type = c.req.header('content-type') ?? ''
  if (!/^application\/([\w.-]+\+)?json\b/i.test(type.trim())) {
    throw new MoonlightError(415, 'unsupported_media_type', 'send the body as JSON with "Content-Type: application/json"', {
      received: type || null,
    })
  }
  await next()
})

/** Validates the JSON body against `schema`; a failure is a 400 listing each bad field. Use after `requireJson`. */
export function jsonBody<Schema extends z.ZodType>(schema: Schema) {
  return zValidator('json', schema, (result, c) => {
    if (!result.success) {
      return c.json({ error: 'invalid request body', code: 'invalid_body', issues: describeIssues(result.error) }, 400)
    }
  })
}
