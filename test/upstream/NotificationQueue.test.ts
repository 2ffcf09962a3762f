/**
 * The notification queue's bounds: how many are on the wire at once, how many
 * may wait, how often a failing one is tried, and how drops are reported.
 * `post` here answers from the test (the HTTP side is covered in
 * Upstream.test.ts against a real app).
 */
import { describe, expect, it } from "vitest"
import { NotificationQueue } from "../../src/upstream/NotificationQueue.ts"
import type { NotificationQueueOptions } from "../../src/upstream/NotificationQueue.ts"

const makeQueue = (options: Partial<NotificationQueueOptions<number>> = {}) => {
  const onTheWire: Array<{ readonly notification: number; readonly done: (failure: string | undefined) => void }> = []
  const drops: Array<{ readonly dropped: number; readonly reason: string }> = []
  const defects: Array<unknown> = []
  const queue = new NotificationQueue<number>({
    concurrency: 2,
    capacity: 5,
    attempts: 3,
    firstRetryMs: 1,
    post: (notification, done) => onTheWire.push({ notification, done }),
    onDropped: (dropped, reason) => drops.push({ dropped, reason }),
    onDefect: (error) => defects.push(error),
    ...options
  })
  return { queue, onTheWire, drops, defects }
}

describe("NotificationQueue", () => {
  it("keeps at most `concurrency` on the wire and sends the rest in order as answers come", () => {
    const { queue, onTheWire } = makeQueue()
    for (let n = 1; n <= 4; n++) queue.add(n)
    expect(onTheWire.map((sent) => sent.notification)).toEqual([1, 2])
    onTheWire[0]!.done(undefined)
    expect(onTheWire.map((sent) => sent.notification)).toEqual([1, 2, 3])
    onTheWire[1]!.done(undefined)
    onTheWire[2]!.done(undefined)
    expect(onTheWire.map((sent) => sent.notification)).toEqual([1, 2, 3, 4])
    onTheWire[3]!.done(undefined)
    expect(queue.size).toBe(0)
  })

  it("drops past `capacity`, reporting the first drop and every thousandth", () => {
    const { queue, drops } = makeQueue()
    for (let n = 0; n < 5 + 2_001; n++) queue.add(n)
    expect(queue.size).toBe(5)
    expect(drops).toEqual([
      { dropped: 1, reason: "5 already pending" },
      { dropped: 1001, reason: "5 already pending" },
      { dropped: 2001, reason: "5 already pending" }
    ])
  })

  it("tries a failing notification `attempts` times, then drops it with the last failure", async () => {
    const retried = new Promise<void>((resolve) => {
      let tries = 0
      const { queue, drops } = makeQueue({
        post: (_notification, done) => {
          tries++
          done(`answered 50${tries}`)
          if (tries === 3) {
            expect(drops).toEqual([{ dropped: 1, reason: "failed 3 times, last: answered 503" }])
            expect(queue.size).toBe(0)
            resolve()
          }
        }
      })
      queue.add(1)
    })
    await retried
  })

  it("a notification that is answered synchronously does not stall the ones behind it", () => {
    const sent: Array<number> = []
    const { queue } = makeQueue({
      post: (notification, done) => {
        sent.push(notification)
        done(undefined)
      }
    })
    for (let n = 1; n <= 5; n++) queue.add(n)
    expect(sent).toEqual([1, 2, 3, 4, 5])
    expect(queue.size).toBe(0)
  })

  it("a notification whose sending throws counts as a failed attempt and stalls nothing", async () => {
    let calls = 0
    const sent: Array<number> = []
    const { queue, defects } = makeQueue({
      attempts: 1,
      post: (notification, done) => {
        if (calls++ === 0) throw new Error("bug")
        sent.push(notification)
        done(undefined)
      }
    })
    for (let n = 1; n <= 3; n++) queue.add(n)
    expect(defects).toHaveLength(1)
    expect(sent).toEqual([2, 3])
    expect(queue.size).toBe(0)
    await queue.drained()
  })

  it("drained() resolves once the last pending notification is answered", async () => {
    const { queue, onTheWire } = makeQueue()
    await queue.drained()
    queue.add(1)
    queue.add(2)
    let drained = false
    const waiting = queue.drained().then(() => (drained = true))
    onTheWire[0]!.done(undefined)
    await Promise.resolve()
    expect(drained).toBe(false)
    onTheWire[1]!.done(undefined)
    await waiting
    expect(queue.size).toBe(0)
  })
})
