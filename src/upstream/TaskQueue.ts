/**
 * Runs tasks at most `limit` at a time, in the order they were added. A task
 * gets a `release` function and calls it once when its work is over (further
 * calls are ignored); the next waiting task starts then.
 *
 * The upstream uses one per app in front of the HTTP client, so that the
 * client never queues a request itself (a call that times out or is abandoned
 * while waiting simply releases its turn unused), and one per app for
 * notifications.
 */

export type Task = (release: () => void) => void

/** Leading entries of the waiting list that are cleared at once, rather than shifted one by one. */
const COMPACT_AFTER = 1024

export class TaskQueue {
  private readonly limit: number
  private readonly onDefect: (error: unknown) => void
  private waiting: Array<Task | undefined> = []
  /** Index of the next task to start in `waiting`. */
  private head = 0
  private running = 0
  private pumping = false

  constructor(limit: number, onDefect: (error: unknown) => void) {
    this.limit = limit
    this.onDefect = onDefect
  }

  add(task: Task): void {
    this.waiting.push(task)
    this.pump()
  }

  private pump(): void {
    // a task that releases synchronously re-enters here; the loop already running takes over
    if (this.pumping) return
    this.pumping = true
    try {
      while (this.running < this.limit && this.head < this.waiting.length) {
        const task = this.waiting[this.head]!
        this.waiting[this.head++] = undefined
        if (this.head === this.waiting.length) {
          this.waiting.length = 0
          this.head = 0
        } else if (this.head >= COMPACT_AFTER && this.head * 2 >= this.waiting.length) {
          this.waiting = this.waiting.slice(this.head)
          this.head = 0
        }
        this.start(task)
      }
    } finally {
      this.pumping = false
    }
  }

  private start(task: Task): void {
    this.running++
    let released = false
    const release = () => {
      if (released) return
      released = true
      this.running--
      this.pump()
    }
    try {
      task(release)
    } catch (error) {
      // a bug in one task must not stall the queue
      release()
      this.onDefect(error)
    }
  }
}
