/**
 * GET /openapi.json: a valid OpenAPI 3.1 document (checked by a real validator), naming every route
 * the server answers, with examples that the server's own schemas accept.
 */
import { describe, expect, test } from 'bun:test'
import { Validator } from '@seriousme/openapi-schema-validator'
import { ANSWER_SCHEMAS, REQUEST_SCHEMAS } from '../../../src/http/openapi.ts'
import { runMain } from '../../support/cli.ts'
import { testScope } from '../../support/helpers.ts'

const { server } = testScope()

type Operation = {
  operationId?: string
  security?: unknown[]
  requestBody?: { content: Record<string, { schema?: { $ref?: string }; example?: unknown }> }
  responses: Record<string, { $ref?: string; content?: Record<string, { schema?: { $ref?: string }; example?: unknown }> }>
}
type Document = { openapi: string; paths: Record<string, Record<string, Operation>>; components: Record<string, Record<string, unknown>> }

async function fetchDocument(url: string): Promise<Document> {
  const response = await fetch(`${url}/openapi.json`)
  expect(response.status).toBe(200)
  expect(response.headers.get('content-type')).toContain('application/json')
  return (await response.json()) as Document
}

describe('GET /openapi.json', () => {
  test('is a valid OpenAPI 3.1 document', async () => {
    const mls = server()
    const document = await fetchDocument(mls.url)
    const result = await new Validator().validate(document as never)
    expect({ valid: result.valid, errors: result.errors }).toEqual({ valid: true, errors: undefined })
    expect(document.openapi).toBe('3.1.0')
  })

  test('names every route the server answers, and each route it names answers (never the 404 of no route)', async () => {
    const mls = server()
    const document = await fetchDocument(mls.url)
    const documented = new Set(
      Object.entries(document.paths).flatMap(([path, operations]) => Object.keys(operations).map((method) => `${method.toUpperCase()} ${path}`)),
    )
    const served = mls.server.routes().map(({ method, path }) => `${method} ${path.replace(/:(\w+)/g, '{$1}')}`)
    expect(served.length).toBeGreaterThan(15)
    for (const route of served) expect({ route, documented: documented.has(route) }).toEqual({ route, documented: true })
    for (const route of documented) {
      const [method, path] = route.split(' ') as [string, string]
      // A real asset for the static route; any id elsewhere (an unknown task is the route's own 404, not the fallback's).
      const concrete = path.replace('{file}', 'base.css').replace(/\{(\w+)\}/g, 'x')
      const response = await fetch(`${mls.url}${concrete}`, { method })
      const body = await response.text()
      expect({ route, noRoute: response.status === 404 && body.includes('"not_found"') }).toEqual({ route, noRoute: false })
    }
  })

  test('every operation has an example, and every example is accepted by the schema the server uses', async () => {
    const mls = server()
    const document = await fetchDocument(mls.url)
    const schemas: Record<string, { safeParse: (value: unknown) => { success: boolean; error?: unknown } }> = { ...REQUEST_SCHEMAS, ...ANSWER_SCHEMAS }
    let checked = 0
    for (const [path, operations] of Object.entries(document.paths)) {
      for (const [method, operation] of Object.entries(operations)) {
        const contents = [
          ...Object.values(operation.requestBody?.content ?? {}),
          ...Object.values(operation.responses).flatMap((response) => Object.values(response.content ?? {})),
        ]
        const examples = contents.filter((content) => content.example !== undefined)
        const hasExample = examples.length > 0 || Object.values(operation.responses).every((response) => response.content === undefined || response.$ref)
        expect({ operation: `${method} ${path}`, hasExample }).toEqual({ operation: `${method} ${path}`, hasExample: true })
        for (const { schema, example } of examples) {
          const name = schema?.$ref?.replace('#/components/schemas/', '')
          if (!name) continue
          const parsed = schemas[name]!.safeParse(example)
          expect({ operation: `${method} ${path}`, schema: name, valid: parsed.success }).toEqual({ operation: `${method} ${path}`, schema: name, valid: true })
          checked++
        }
      }
    }
    expect(checked).toBeGreaterThan(8)
  })

  test('says how to authenticate, and gives every error its JSON shape', async () => {
    const mls = server()
    const document = await fetchDocument(mls.url)
    expect(document.components.securitySchemes).toEqual({
      bearer: expect.objectContaining({ type: 'http', scheme: 'bearer' }),
      x_token: expect.objectContaining({ type: 'apiKey', in: 'header', name: 'X-Token' }),
    })
    expect(document.paths['/clients']!.get!.security).toEqual([{ bearer: [] }, { x_token: [] }])
    const errorSchema = document.components.schemas!.Error as { properties: { code: { enum: string[] } } }
    expect(errorSchema.properties.code.enum).toContain('idempotency_mismatch')
    for (const status of ['400', '401', '403', '404', '409', '413', '415', '422', '429', '502', '503', '504']) {
      expect(document.components.responses![`Error${status}`]).toMatchObject({
        content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
      })
    }
    // An error the server really sends fits the documented shape.
    const refused = await fetch(`${mls.url}/clients`)
    expect(ANSWER_SCHEMAS.Error.safeParse(await refused.json()).success).toBe(true)
  })

  test('`moonlight openapi` prints the same document', async () => {
    const mls = server()
    const printed = await runMain(['openapi'])
    expect(printed.code).toBe(0)
    const document = JSON.parse(printed.stdout)
    expect(Object.keys(document.paths).sort()).toEqual(Object.keys((await fetchDocument(mls.url)).paths).sort())
  })
})
