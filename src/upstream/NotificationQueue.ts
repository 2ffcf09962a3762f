/**
 * The lifecycle notifications of one app (CONTRACT §3, notify) on their way
 * out: fire-and-forget, a few at a time, with bounded retries.
 *
 * Notifications come in bursts (a reconnect storm opens thousands of
 * connections at once, a network blip closes them), and each connection makes
 * several. Handing a burst straight to the app's connection pool would queue
 * it ahead of the auth and message calls that clients wait for, so only
 * `concurrency` notifications are on the wire at once and the rest wait here,
 * up to `capacity`; past that, new ones are dropped and counted rather than
 * held without bound. Drops are logged on the first and every thousandth, so
 * that a dead app does not flood the logs.
 */
import { TaskQueue } from "./TaskQueue.ts"

export interface NotificationQueueOptions<N> {
  /** Notifications on the wire at once. */
  readonly concurrency: number
  /** Notifications pending (waiting, on the wire or waiting to be retried) at most. */
  readonly capacity: number
  readonly attempts: number
  readonly firstRetryMs: number
  /** Sends one; `done` gets undefined on success, else why it failed. */
  readonly post: (notification: N, done: (failure: string | undefined) => void) => void
  readonly onDropped: (dropped: number, reason: string) => void
  /** Every dropped notification, by why (for metrics; `onDropped` is sampled). */
  readonly countDropped?: (why: "queue_full" | "failed") => void
  /** A bug while sending one (it counts as a failed attempt). */
  readonly onDefect: (error: unknown) => void
}

export class NotificationQueue<N> {
  private readonly options: NotificationQueueOptions<N>
  private readonly sending: TaskQueue
  private pending = 0
  private dropped = 0
  private idle: Array<() => void> = []

  constructor(options: NotificationQueueOptions<N>) {
    this.options = options
    this.sending = new TaskQueue(options.concurrency, options.onDefect)
  }

  /** Notifications not finished yet. */
  get size(): number {
    return this.pending
  }

  add(notification: N): void {
    if (this.pending >= this.options.capacity) {
      this.drop("queue_full", `${this.options.capacity} already pending`)
      return
    }
    this.pending++
    this.attempt(notification, this.options.attempts, this.options.firstRetryMs)
  }

  /** Resolves once nothing is pending (at once when nothing is). */
  drained(): Promise<void> {
    if (this.pending === 0) return Promise.resolve()
    return new Promise((resolve) => this.idle.push(resolve))
  }

  private attempt(notification: N, attemptsLeft: number, retryMs: number): void {
    this.sending.add((release) => {
      let answered = false
      const done = (failure: string | undefined) => {
        if (answered) return
        answered = true
        release()
        if (failure === undefined) return this.finished()
        if (attemptsLeft > 1) {
          setTimeout(() => this.attempt(notification, attemptsLeft - 1, retryMs * 2), retryMs).unref()
          return
        }
        this.drop("failed", `failed ${this.options.attempts} times, last: ${failure}`)
        this.finished()
      }
      try {
        this.options.post(notification, done)
      } catch (error) {
        done(String(error))
        throw error
      }
    })
  }

  private finished(): void {
    this.pending--
    if (this.pending > 0 || this.idle.length === 0) return
    const waiting = this.idle
    this.idle = []
    for (const resolve of waiting) resolve()
  }

  private drop(why: "queue_full" | "failed", reason: string): void {
    this.dropped++
    this.options.countDropped?.(why)
    if (this.dropped % 1000 === 1) this.options.onDropped(this.dropped, reason)
  }
}
