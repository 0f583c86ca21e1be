import { z } from 'zod'
import type { TaskNews } from '../tasks/stored/runner.ts'
import type { Cluster } from './cluster.ts'
import { readMessage } from './messages.ts'

/**
 * News of stored tasks between instances, on the cluster's task channel: a task was queued (an idle
 * instance claims it), finished (long polls waiting elsewhere wake) or cancelled (the instance
 * running it cuts it). Checked like every other cluster message (src/cluster/messages.ts).
 */
export const taskNewsSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('queued') }),
  z.object({ type: z.literal('finished'), task_id: z.string() }),
  z.object({ type: z.literal('cancel'), task_id: z.string() }),
])
export type TaskNewsMessage = z.infer<typeof taskNewsSchema>

/** What the stored tasks of this instance do on another's news. */
export interface TaskNewsListener {
  pump(strict: boolean): Promise<void>
  onFinished(taskId: string): void
  onCancel(taskId: string): void
}

/** Publishes this instance's news; a lost message is a long poll woken later (by its own timer), never an error. */
export function publishTaskNews(cluster: Cluster): TaskNews {
  const send = (news: TaskNewsMessage) => void cluster.connection.publish(cluster.keys.taskEvents, JSON.stringify(news)).catch(() => undefined)
  return {
    queued: () => send({ type: 'queued' }),
    finished: (taskId) => send({ type: 'finished', task_id: taskId }),
    cancel: (taskId) => send({ type: 'cancel', task_id: taskId }),
  }
}

/** Hands every instance's news to `listener`; a message of another shape is dropped. */
export function listenForTaskNews(cluster: Cluster, listener: TaskNewsListener): void {
  void cluster.connection.subscribe(cluster.keys.taskEvents, (text) => {
    const news = readMessage(taskNewsSchema, text)
    if (news?.type === 'queued') void listener.pump(false)
    else if (news?.type === 'finished') listener.onFinished(news.task_id)
    else if (news?.type === 'cancel') listener.onCancel(news.task_id)
  })
}

/** Alone, there is no one to tell. */
export const NO_TASK_NEWS: TaskNews = { queued: () => undefined, finished: () => undefined, cancel: () => undefined }
