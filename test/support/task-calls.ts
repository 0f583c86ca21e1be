/** The stored-task calls the tests make: the body's text kept beside the response, with the test token. */
import { TOKEN } from './helpers.ts'

export const TASK_HEADERS = { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` }

export interface Called {
  response: Response
  text: string
}

/** POST /task/request; a string body is sent as it is. */
export async function submitTask(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Called> {
  const response = await fetch(`${url}/task/request`, {
    method: 'POST',
    headers: { ...TASK_HEADERS, ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  })
  return { response, text: await response.text() }
}

/** GET /task/{id}/result?wait=S. */
export async function taskResult(url: string, taskId: string, waitS: number): Promise<Called> {
  const response = await fetch(`${url}/task/${taskId}/result?wait=${waitS}`, { headers: TASK_HEADERS })
  return { response, text: await response.text() }
}
