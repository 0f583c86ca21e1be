import type { z } from 'zod'

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
