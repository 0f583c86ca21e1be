/**
 * The server's own OpenAPI document (GET /openapi.json) as a contract its real answers are checked
 * against: the status is one the operation lists, the body validates (ajv, JSON Schema 2020-12, the
 * document's $refs resolved) against the schema of that status and content type, the documented
 * headers are there, every error of the server's own is JSON `{error, code}` with a code the status's
 * description lists, and docs/http-api.md's table lists that status and code.
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import Ajv2020, { type ValidateFunction } from 'ajv/dist/2020.js'
import { ROOT } from './helpers.ts'

type Content = Record<string, { schema?: Record<string, unknown> }>
interface ResponseObject {
  $ref?: string
  description?: string
  headers?: Record<string, unknown>
  content?: Content
}
type Operation = { security?: Array<Record<string, unknown>>; responses: Record<string, ResponseObject> }
interface OpenApiDocument {
  paths: Record<string, Record<string, Operation>>
  components: { schemas: Record<string, unknown>; responses: Record<string, ResponseObject> }
}

/** One answer, read whole, as the checks and the test see it. */
export interface Answer {
  status: number
  headers: Headers
  text: string
  /** The body parsed as JSON, or undefined when it is not JSON. */
  body: any
}

/** Every (operation, status and code) reached, for the coverage check and table. */
export const coverage = new Map<string, Set<string>>()

/** The statuses and codes docs/http-api.md's error table lists: "503 no_client", … */
export const HTTP_API_TABLE: ReadonlySet<string> = readErrorTable()

function readErrorTable(): Set<string> {
  const markdown = readFileSync(join(ROOT, 'docs/http-api.md'), 'utf8')
  const listed = new Set<string>()
  for (const line of markdown.split('\n')) {
    const row = /^\| (\d{3}) \| (.+?) \|/.exec(line)
    if (!row) continue
    for (const code of row[2]!.matchAll(/`([a-z_]+)`/g)) listed.add(`${row[1]} ${code[1]}`)
  }
  return listed
}

const BASE = 'https://moonlight.test/openapi.json'

export class Contract {
  private readonly ajv = new Ajv2020({ strict: false, allErrors: true })
  private readonly validators = new Map<string, ValidateFunction>()

  constructor(readonly document: OpenApiDocument) {
    // The components under a base URI of their own: the document's "#/components/…" refs resolve in it.
    this.ajv.addSchema({ $id: BASE, components: document.components })
  }

  /**
   * What is wrong with `answer` as the answer of `operation` ("GET /task/{id}") to a request that sent
   * a token or not; [] when nothing. An answer with X-Moonlight-Node is an agent's own, passed as-is:
   * it is the operation's `default` response, whatever its status.
   */
  problems(operation: string, answer: Answer, sentToken: boolean): string[] {
    const [method, path] = operation.split(' ') as [string, string]
    const documented = this.document.paths[path]?.[method.toLowerCase()]
    if (!documented) return [`${operation} is not in the document`]
    const agents = answer.headers.has('x-moonlight-node') && documented.responses.default !== undefined
    const listed = agents ? documented.responses.default : (documented.responses[String(answer.status)] ?? documented.responses.default)
    if (!listed)
      return [`status ${answer.status} is not documented (documented: ${Object.keys(documented.responses).join(', ')}): ${answer.text.slice(0, 200)}`]
    const response = this.resolve(listed)
    const problems: string[] = []
    // A header the document says may be absent (required: false, written out) need not be there; any other must.
    for (const [name, header] of Object.entries(response.headers ?? {})) {
      if ((header as { required?: boolean }).required !== false && !answer.headers.has(name))
        problems.push(`status ${answer.status}: documented header ${name} is missing`)
    }
    problems.push(...this.contentProblems(answer, response))
    const anonymous =
      documented.security === undefined || documented.security.length === 0 || documented.security.some((scheme) => Object.keys(scheme).length === 0)
    if (!sentToken && answer.status < 300 && !anonymous) problems.push(`status ${answer.status} without a token, yet the document requires one (security)`)
    if (answer.status >= 400 && !answer.headers.has('x-moonlight-node') && !this.isBroadcastReply(operation, answer))
      problems.push(...errorProblems(answer, response))
    return problems
  }

  /** A broadcast nobody answered: its 502 is the broadcast's reply (every agent's result), the one error answer without `{error, code}`. */
  private isBroadcastReply(operation: string, answer: Answer): boolean {
    return operation === 'POST /task/request' && answer.status === 502 && this.validator({ $ref: '#/components/schemas/BroadcastReply' })(answer.body) === true
  }

  private contentProblems(answer: Answer, response: ResponseObject): string[] {
    const mediaType = (answer.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase()
    if (!response.content) return answer.text === '' ? [] : [`status ${answer.status}: a body of ${mediaType || 'no type'} where the document names no content`]
    const [type] = mediaType.split('/')
    const key = [mediaType, `${type}/*`, '*/*'].find((candidate) => response.content![candidate] !== undefined)
    if (key === undefined)
      return [`status ${answer.status}: content type "${mediaType}" is not documented (documented: ${Object.keys(response.content).join(', ')})`]
    const schema = response.content[key]!.schema
    if (schema === undefined || !/\bjson$|\+json$/.test(mediaType)) return []
    if (answer.body === undefined) return [`status ${answer.status}: declared ${mediaType}, but the body is not JSON: ${answer.text.slice(0, 200)}`]
    const validate = this.validator(schema)
    if (validate(answer.body)) return []
    return [
      `status ${answer.status}: the body does not match ${JSON.stringify(schema)}: ${this.ajv.errorsText(validate.errors)} — ${answer.text.slice(0, 300)}`,
    ]
  }

  private validator(schema: Record<string, unknown>): ValidateFunction {
    const key = JSON.stringify(schema)
    let validate = this.validators.get(key)
    if (validate === undefined) {
      validate = this.ajv.compile(rebased(schema) as Record<string, unknown>)
      this.validators.set(key, validate)
    }
    return validate
  }

  private resolve(response: ResponseObject): ResponseObject {
    if (response.$ref === undefined) return response
    const name = response.$ref.replace('#/components/responses/', '')
    const resolved = this.document.components.responses[name]
    if (!resolved) throw new Error(`the document refers to a response it does not have: ${response.$ref}`)
    return resolved
  }
}

/** A schema of an operation with its "#/components/…" refs pointing into the components added under BASE. */
function rebased(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(rebased)
  if (typeof schema !== 'object' || schema === null) return schema
  return Object.fromEntries(
    Object.entries(schema).map(([key, value]) => [
      key,
      key === '$ref' && typeof value === 'string' && value.startsWith('#') ? `${BASE}${value}` : rebased(value),
    ]),
  )
}

/**
 * The codes an error status's description lists: "An error: forbidden, address_not_allowed,
 * queue_timeout and queue_full (with Retry-After). …" gives forbidden, address_not_allowed,
 * queue_timeout and queue_full; the notes in parentheses (fields, a reason such as
 * retry_budget_exhausted) and the sentences after the list name no code.
 */
function listedCodes(description: string): Set<string> {
  const list = /^An error: ([^.]*)\./.exec(description.replace(/ ?\([^)]*\)/g, ''))?.[1] ?? ''
  return new Set(
    list
      .split(/,| and /)
      .map((item) => item.trim())
      .filter((item) => /^[a-z]+(?:_[a-z]+)*$/.test(item)),
  )
}

/** An error of the server's own: JSON `{error, code, …}`, a code the status's description lists, a row of docs/http-api.md's table. */
function errorProblems(answer: Answer, response: ResponseObject): string[] {
  const problems: string[] = []
  if (!/^application\/json\b/.test(answer.headers.get('content-type') ?? '')) problems.push(`status ${answer.status}: an error not sent as application/json`)
  const { body } = answer
  if (typeof body?.error !== 'string' || typeof body?.code !== 'string') {
    problems.push(`status ${answer.status}: an error without its "error" and "code": ${answer.text.slice(0, 300)}`)
    return problems
  }
  const listed = listedCodes(response.description ?? '')
  if (!listed.has(body.code))
    problems.push(`status ${answer.status}: code ${body.code} is not among those its description lists (${[...listed].join(', ')}: "${response.description}")`)
  if (!HTTP_API_TABLE.has(`${answer.status} ${body.code}`)) problems.push(`docs/http-api.md's error table has no row for ${answer.status} ${body.code}`)
  return problems
}

const contracts = new WeakMap<object, Promise<Contract>>()

/** The contract a server publishes, fetched once per server (ask before stopping it: a stopping server answers 503). */
export function contractOf(server: { url: string }): Promise<Contract> {
  let contract = contracts.get(server)
  if (contract === undefined) {
    contract = fetch(`${server.url}/openapi.json`).then(async (response) => {
      if (response.status !== 200) throw new Error(`GET /openapi.json answered ${response.status}: ${await response.text()}`)
      return new Contract((await response.json()) as OpenApiDocument)
    })
    contracts.set(server, contract)
  }
  return contract
}

/** Reads `response` whole and records which status (and code) of `operation` it reached. */
export async function readAnswer(operation: string, response: Response): Promise<Answer> {
  const text = await response.text()
  let body: unknown
  try {
    body = text === '' ? undefined : JSON.parse(text)
  } catch {
    body = undefined
  }
  const answer: Answer = { status: response.status, headers: response.headers, text, body }
  record(operation, answer)
  return answer
}

export function record(operation: string, answer: Pick<Answer, 'status' | 'body' | 'headers'>): void {
  let reached = coverage.get(operation)
  if (reached === undefined) {
    reached = new Set()
    coverage.set(operation, reached)
  }
  const code = answer.status >= 400 && !answer.headers.has('x-moonlight-node') && typeof answer.body?.code === 'string' ? ` ${answer.body.code}` : ''
  reached.add(`${answer.status}${code}`)
}
