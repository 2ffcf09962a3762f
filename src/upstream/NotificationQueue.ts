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
}

interface Pending<N> {
  readonly notification: N
  attemptsLeft: number
  retryMs: number
}

/** Leading entries of the waiting list that are cleared at once, rather than shifted one by one. */
const COMPACT_AFTER = 1024

export class NotificationQueue<N> {
  private readonly options: NotificationQueueOptions<N>
  private waiting: Array<Pending<N>> = []
  /** Index of the next notification to send in `waiting`. */
  private head = 0
  private onTheWire = 0
  private pending = 0
  private dropped = 0
  private pumping = false

  constructor(options: NotificationQueueOptions<N>) {
    this.options = options
  }

  /** Notifications not finished yet. */
  get size(): number {
    return this.pending
  }

  add(notification: N): void {
    if (this.pending >= this.options.capacity) {
      this.drop(`${this.options.capacity} already pending`)
      return
    }
    this.pending++
    this.waiting.push({ notification, attemptsLeft: this.options.attempts, retryMs: this.options.firstRetryMs })
    this.pump()
  }

  private pump(): void {
    // a post that finishes synchronously re-enters here; the loop already running takes over
    if (this.pumping) return
    this.pumping = true
    while (this.onTheWire < this.options.concurrency && this.head < this.waiting.length) {
      const next = this.waiting[this.head++]!
      if (this.head >= COMPACT_AFTER && this.head * 2 >= this.waiting.length) {
        this.waiting = this.waiting.slice(this.head)
        this.head = 0
      }
      this.send(next)
    }
    this.pumping = false
  }

  private send(pending: Pending<N>): void {
    this.onTheWire++
    pending.attemptsLeft--
    this.options.post(pending.notification, (failure) => {
      this.onTheWire--
      if (failure === undefined) {
        this.pending--
      } else if (pending.attemptsLeft > 0) {
        const retryMs = pending.retryMs
        pending.retryMs *= 2
        setTimeout(() => {
          this.waiting.push(pending)
          this.pump()
        }, retryMs).unref()
      } else {
        this.pending--
        this.drop(`failed ${this.options.attempts} times, last: ${failure}`)
      }
      this.pump()
    })
  }

  private drop(reason: string): void {
    this.dropped++
    if (this.dropped % 1000 === 1) this.options.onDropped(this.dropped, reason)
  }
}
