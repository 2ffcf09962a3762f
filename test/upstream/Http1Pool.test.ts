/**
 * The HTTP/1.1 client under every app call, against servers that write exact
 * bytes: how answers are delimited, when a connection is reused, and how
 * every way an app can misbehave ends in exactly one failure.
 */
import { readFileSync } from "node:fs"
import { createServer as createHttpServer } from "node:http"
import { createServer as createHttpsServer } from "node:https"
import { createServer } from "node:net"
import type { AddressInfo, Server, Socket } from "node:net"
import type { TLSSocket } from "node:tls"
import { afterEach, describe, expect, it } from "vitest"
import { formatRequest, Http1Pool } from "../../src/upstream/Http1Pool.ts"
import type { HttpAnswer, Http1PoolOptions } from "../../src/upstream/Http1Pool.ts"

const cert = readFileSync(new URL("./fixtures/localhost-cert.pem", import.meta.url))
const key = readFileSync(new URL("./fixtures/localhost-key.pem", import.meta.url))

/** What a scripted server saw: each request's text, and on which connection (numbered from 1). */
interface Seen {
  readonly requests: Array<{ readonly text: string; readonly connection: number }>
  connections: number
}

type Script = (request: string, socket: Socket, index: number) => void

const cleanups: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

const listen = async (server: Server | ReturnType<typeof createHttpServer>) => {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return (server.address() as AddressInfo).port
}

/** A server that reads whole requests (head, then `content-length` bytes) and answers each with `script`. */
const scripted = async (script: Script): Promise<{ readonly origin: string; readonly seen: Seen }> => {
  const seen: Seen = { requests: [], connections: 0 }
  const sockets = new Set<Socket>()
  const server = createServer((socket) => {
    sockets.add(socket)
    socket.on("close", () => sockets.delete(socket))
    const connection = ++seen.connections
    let buffered = ""
    socket.setEncoding("latin1")
    socket.on("data", (chunk: string) => {
      buffered += chunk
      for (;;) {
        const headEnd = buffered.indexOf("\r\n\r\n")
        if (headEnd < 0) return
        const length = Number(/content-length: (\d+)/i.exec(buffered.slice(0, headEnd))?.[1] ?? 0)
        const end = headEnd + 4 + length
        if (buffered.length < end) return
        const text = buffered.slice(0, end)
        buffered = buffered.slice(end)
        seen.requests.push({ text, connection })
        script(text, socket, seen.requests.length)
      }
    })
    socket.on("error", () => {})
  })
  cleanups.push(() => {
    for (const socket of sockets) socket.destroy()
  })
  const port = await listen(server)
  return { origin: `http://127.0.0.1:${port}`, seen }
}

const poolFor = (origin: string, options: Partial<Http1PoolOptions> = {}) => {
  const pool = new Http1Pool({ origin, connectTimeoutMs: 2_000, maxAnswerBytes: 1024, idleMs: 30_000, ...options })
  cleanups.push(() => pool.destroy())
  return pool
}

/** Sends one request and settles with its outcome; counts how often `done` was called. */
const exchange = (pool: Http1Pool, body?: string, replayable = true) => {
  let calls = 0
  let abandon = () => {}
  const outcome = new Promise<{ error?: Error; answer?: HttpAnswer }>((resolve) => {
    abandon = pool.send(pool.format(body === undefined ? "GET" : "POST", "/call", {}, body), replayable, (error, answer) => {
      calls++
      resolve(error === undefined ? { answer: answer! } : { error })
    })
  })
  return { outcome, abandon, calls: () => calls }
}

const answer = (pool: Http1Pool, body?: string) =>
  exchange(pool, body).outcome.then(({ answer, error }) => {
    if (error !== undefined) throw error
    return answer!
  })

const failure = (pool: Http1Pool) =>
  exchange(pool).outcome.then(({ answer, error }) => {
    if (error === undefined) throw new Error(`expected a failure, got ${answer!.status}`)
    return error.message
  })

const ok = (body: string, extra = "") =>
  `HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`

/** Two calls in a row to a server answering with `script`: their bodies, and how many connections they took. */
const twoCalls = async (script: Script) => {
  const { origin, seen } = await scripted(script)
  const pool = poolFor(origin)
  const bodies = [(await answer(pool)).body, (await answer(pool)).body]
  return { bodies, connections: seen.connections }
}

describe("requests", () => {
  it("are written as one HTTP/1.1 request with host, headers and content-length", async () => {
    const { origin, seen } = await scripted((_request, socket) => socket.write(ok("{}")))
    const pool = poolFor(origin)
    const body = JSON.stringify({ name: "zoë" })
    await new Promise((resolve) => pool.send(pool.format("POST", "/a?b=1", { "x-one": "1" }, body), true, resolve))
    const expected = `POST /a?b=1 HTTP/1.1\r\nhost: ${origin.slice("http://".length)}\r\nx-one: 1\r\ncontent-length: ${
      Buffer.byteLength(body)
    }\r\n\r\n${body}`
    // the server reads bytes as latin1
    expect(seen.requests[0]!.text).toBe(Buffer.from(expected).toString("latin1"))
  })

  it("refuse a header that would break the request's framing", () => {
    expect(() => formatRequest("GET", "h", "/", { "x-a": "1\r\nx-b: 2" }, undefined)).toThrow(TypeError)
    expect(() => formatRequest("GET", "h", "/", { "x a": "1" }, undefined)).toThrow(TypeError)
  })
})

describe("answers", () => {
  it("are read by content-length, across any split of the bytes, and the connection is reused", async () => {
    const { origin, seen } = await scripted((_request, socket, index) => {
      const bytes = Buffer.from(ok(JSON.stringify({ index, text: "é".repeat(20) }), "x-multi: a\r\nx-multi: b\r\n"))
      // one byte at a time for the first answer, whole for the second
      if (index === 1) for (const byte of bytes) socket.write(Buffer.of(byte))
      else socket.write(bytes)
    })
    const pool = poolFor(origin)
    const first = await answer(pool)
    expect(first.status).toBe(200)
    expect(JSON.parse(first.body)).toEqual({ index: 1, text: "é".repeat(20) })
    expect(first.headers["x-multi"]).toEqual(["a", "b"])
    expect(JSON.parse((await answer(pool)).body).index).toBe(2)
    expect(seen.connections).toBe(1)
  })

  it("are read in chunked encoding, with extensions and trailers", async () => {
    const calls = await twoCalls((_request, socket) => {
      socket.write("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\n{\"a\":\r\n")
      socket.write("3\r\n1}\n\r\n0\r\nx-trailer: t\r\n\r\n")
    })
    expect(calls).toEqual({ bodies: ["{\"a\":1}\n", "{\"a\":1}\n"], connections: 1 })
  })

  it("without a length run until the app closes the connection, which is not reused", async () => {
    const calls = await twoCalls((_request, socket) => {
      socket.write("HTTP/1.1 200 OK\r\n\r\npart one, ")
      socket.end("part two")
    })
    expect(calls).toEqual({ bodies: ["part one, part two", "part one, part two"], connections: 2 })
  })

  it("204 and 304 have no body whatever their headers say; 100 Continue is skipped; the reason may be empty", async () => {
    const { origin } = await scripted((_request, socket, index) => {
      if (index === 1) socket.write("HTTP/1.1 204 No Content\r\ncontent-length: 10\r\n\r\n")
      else if (index === 2) socket.write(`HTTP/1.1 100 Continue\r\n\r\n${ok("after")}`)
      else socket.write("HTTP/1.1 304\r\n\r\n")
    })
    const pool = poolFor(origin)
    expect(await answer(pool)).toMatchObject({ status: 204, body: "" })
    expect(await answer(pool)).toMatchObject({ status: 200, body: "after" })
    expect(await answer(pool)).toMatchObject({ status: 304, body: "" })
  })

  it("with connection: close, or from HTTP/1.0 without keep-alive, close the connection", async () => {
    const { origin, seen } = await scripted((_request, socket, index) => {
      if (index === 1) socket.write(ok("a", "connection: close\r\n"))
      else if (index === 2) socket.write("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\nb")
      else socket.write("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\nc")
    })
    const pool = poolFor(origin)
    for (const body of ["a", "b", "c", "c"]) expect((await answer(pool)).body).toBe(body)
    // the first two closed their connection; the HTTP/1.0 keep-alive one carried the last two
    expect(seen.requests.map((request) => request.connection)).toEqual([1, 2, 3, 3])
  })

  it("keep their values' inner white space and any byte but CR, LF and NUL", async () => {
    const { origin } = await scripted((_request, socket) =>
      socket.write(Buffer.concat([
        Buffer.from("HTTP/1.1 200 OK\r\ncontent-length: 1\r\nx-a: \t one\ttwo \t\r\nx-b: "),
        Buffer.of(0xa0),
        Buffer.from("\r\nx-c:\r\n\r\na")
      ]))
    )
    const { headers } = await answer(poolFor(origin))
    expect([headers["x-a"], headers["x-b"], headers["x-c"]]).toEqual(["one\ttwo", "\xa0", ""])
  })

  it("may have headers named like object properties", async () => {
    const { origin } = await scripted((_request, socket) => socket.write(ok("a", "constructor: x\r\n__proto__: y\r\n")))
    const { headers } = await answer(poolFor(origin))
    expect(headers["constructor"]).toBe("x")
    // ignored, rather than setting the headers' prototype
    expect(Object.getPrototypeOf(headers)).toBe(Object.prototype)
  })

  it("with both transfer-encoding and content-length are read as chunks, and the connection is not reused", async () => {
    const calls = await twoCalls((_request, socket) =>
      socket.write("HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n")
    )
    expect(calls).toEqual({ bodies: ["a", "a"], connections: 2 })
  })

  it("followed by bytes nobody asked for close the connection", async () => {
    const calls = await twoCalls((_request, socket) => socket.write(`${ok("a")}HTTP/1.1 200 OK\r\n`))
    expect(calls).toEqual({ bodies: ["a", "a"], connections: 2 })
  })
})

describe("failures", () => {
  it.each([
    ["not HTTP", "SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x answer"],
    ["a malformed header", "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line"],
    ["an invalid content-length", "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", "invalid content-length"],
    ["two content-lengths", "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\na", "invalid content-length"],
    ["an invalid chunk size", "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", "invalid chunk size"],
    ["a chunk without its CRLF", "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\naXY", "chunk not followed by CRLF"],
    ["a protocol switch", "HTTP/1.1 101 Switching Protocols\r\n\r\n", "the app switched protocols"],
    ["a body over the limit", ok("x".repeat(1025)), "answer body larger than 1024 bytes"],
    ["a chunked body over the limit", `HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n401\r\n${"x".repeat(1025)}`, "answer body larger than 1024 bytes"],
    [
      "tiny chunks whose size lines and extensions pass the limit",
      `HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n${`1;ext=${"e".repeat(100)}\r\nx\r\n`.repeat(20)}0\r\n\r\n`,
      "answer body larger than 1024 bytes"
    ],
    ["an endless head", `HTTP/1.1 200 OK\r\n${"x-filler: y\r\n".repeat(6000)}`, "answer head too large"],
    ["endless trailers", `HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n${"x-t: y\r\n".repeat(3000)}`, "answer head too large"],
    ["a status under 100", "HTTP/1.1 099 Odd\r\n\r\n", "not an HTTP/1.x answer"],
    ["a folded header", "HTTP/1.1 200 OK\r\nx-a: 1\r\n content-length: 1\r\n\r\na", "malformed header line"],
    ["white space before a colon", "HTTP/1.1 200 OK\r\ncontent-length : 1\r\n\r\na", "malformed header line"],
    ["a bare LF in a header value", "HTTP/1.1 200 OK\r\nx-a: a\ncontent-length: 1\r\n\r\na", "malformed header line"],
    ["a NUL in a header value", "HTTP/1.1 200 OK\r\nx-a: a\0b\r\n\r\n", "malformed header line"],
    ["a bare LF in the status line", "HTTP/1.1 200 OK\ncontent-length: 1\r\n\r\na", "not an HTTP/1.x answer"],
    ["lines ended by bare LFs only", "HTTP/1.1 200 OK\ncontent-length: 1\n\na", "answer lines not ended by CRLF"],
    ["an unknown HTTP version", "HTTP/1.2 200 OK\r\n\r\n", "not an HTTP/1.x answer"],
    ["a status without its reason's space", "HTTP/1.1 200OK\r\n\r\n", "not an HTTP/1.x answer"]
  ])("%s fails the request once, and the next one gets a fresh connection", async (_case, bytes, reason) => {
    const { origin, seen } = await scripted((_request, socket, index) => socket.write(index === 1 ? bytes : ok("fine")))
    const pool = poolFor(origin)
    const first = exchange(pool)
    expect((await first.outcome).error?.message).toBe(reason)
    expect((await answer(pool)).body).toBe("fine")
    expect(first.calls()).toBe(1)
    expect(seen.connections).toBe(2)
  })

  it("an app that closes before answering, or mid-answer, fails the request", async () => {
    const { origin } = await scripted((_request, socket, index) => {
      if (index === 1) socket.end()
      else socket.end("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
    })
    const pool = poolFor(origin)
    expect(await failure(pool)).toBe("the app closed the connection before answering")
    expect(await failure(pool)).toBe("the app closed the connection mid-answer")
  })

  it("a refused connection fails with its code", async () => {
    const closedPort = await new Promise<number>((resolve) => {
      const server = createServer().listen(0, "127.0.0.1", () => {
        const { port } = server.address() as AddressInfo
        server.close(() => resolve(port))
      })
    })
    const error = (await exchange(poolFor(`http://127.0.0.1:${closedPort}`)).outcome).error as NodeJS.ErrnoException
    expect(error.code).toBe("ECONNREFUSED")
  })

  it("a kept connection the app closes as the request goes out: the request is sent again on a new one", async () => {
    const { origin, seen } = await scripted((_request, socket, index) => {
      // the second request arrives on a connection the app has just given up on
      if (index === 2) socket.destroy()
      else socket.write(ok(`answer ${index}`))
    })
    const pool = poolFor(origin)
    await answer(pool)
    expect((await answer(pool)).body).toBe("answer 3")
    expect(seen.requests.map((request) => request.connection)).toEqual([1, 1, 2])
  })

  it("is not sent again once an interim answer arrived: the app had the request", async () => {
    const { origin, seen } = await scripted((_request, socket, index) => {
      if (index === 2) socket.end("HTTP/1.1 102 Processing\r\n\r\n")
      else socket.write(ok("a"))
    })
    const pool = poolFor(origin)
    await answer(pool)
    expect(await failure(pool)).toBe("the app closed the connection mid-answer")
    expect(seen.requests).toHaveLength(2)
  })

  it("is not sent again when it is not replayable", async () => {
    const { origin, seen } = await scripted((_request, socket, index) => {
      if (index === 2) socket.destroy()
      else socket.write(ok("a"))
    })
    const pool = poolFor(origin)
    await answer(pool)
    expect((await exchange(pool, "{}", false).outcome).error).toBeDefined()
    expect(seen.requests).toHaveLength(2)
  })

  it("is not sent again once any of its answer arrived, nor from a new connection", async () => {
    const { origin, seen } = await scripted((_request, socket, index) => {
      if (index === 1) socket.write(ok("a"))
      else socket.end("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
    })
    const pool = poolFor(origin)
    await answer(pool)
    expect(await failure(pool)).toBe("the app closed the connection mid-answer")
    expect(await failure(pool)).toBe("the app closed the connection mid-answer")
    expect(seen.requests.map((request) => request.connection)).toEqual([1, 1, 2])
  })

  it("a connect (TLS handshake included) that takes too long fails with the limit", async () => {
    // accepts the TCP connection and never answers the TLS handshake
    const { origin } = await scripted(() => {})
    const pool = poolFor(origin.replace("http:", "https:"), { connectTimeoutMs: 100 })
    expect(await failure(pool)).toBe("connect timed out after 100 ms")
  })

  it("an abandoned request closes its connection and reports once; the next one is answered", async () => {
    const { origin, seen } = await scripted((_request, socket, index) => {
      if (index > 1) socket.write(ok("later"))
    })
    const pool = poolFor(origin)
    const hanging = exchange(pool)
    await expect.poll(() => seen.requests.length).toBe(1)
    hanging.abandon()
    expect((await hanging.outcome).error?.message).toBe("abandoned")
    expect((await answer(pool)).body).toBe("later")
    hanging.abandon()
    expect(hanging.calls()).toBe(1)
    expect(seen.connections).toBe(2)
  })

  it("abandoning a request already answered leaves its connection to the next one", async () => {
    const { origin, seen } = await scripted((_request, socket) => socket.write(ok("a")))
    const pool = poolFor(origin)
    const first = exchange(pool)
    await first.outcome
    const second = exchange(pool)
    first.abandon()
    expect((await second.outcome).answer?.body).toBe("a")
    expect(seen.connections).toBe(1)
  })
})

describe("idle connections", () => {
  it("closed by the app are dropped at once, and the next request opens a new one", async () => {
    const { origin, seen } = await scripted((_request, socket) => {
      socket.write(ok("a"))
      socket.end()
    })
    const pool = poolFor(origin)
    await answer(pool)
    await expect.poll(() => seen.connections === 1 && pool.idleCount === 0).toBe(true)
    expect((await answer(pool)).body).toBe("a")
    expect(seen.connections).toBe(2)
  })

  it("are kept no longer than the app announces in keep-alive, less a margin", async () => {
    const { origin, seen } = await scripted((_request, socket, index) =>
      socket.write(ok("a", index === 1 ? "keep-alive: timeout=2\r\n" : "keep-alive: timeout=3\r\n"))
    )
    const pool = poolFor(origin)
    // timeout=2 leaves nothing after the 2 s margin: not kept at all
    await answer(pool)
    expect(pool.idleCount).toBe(0)
    await answer(pool)
    expect(pool.idleCount).toBe(1)
    expect(seen.connections).toBe(2)
  })

  it("that talk out of turn are closed", async () => {
    const { origin, seen } = await scripted((_request, socket) => {
      socket.write(ok("a"))
      setImmediate(() => socket.write("HTTP/1.1 200 OK\r\n"))
    })
    const pool = poolFor(origin)
    await answer(pool)
    await expect.poll(() => pool.idleCount).toBe(0)
    await answer(pool)
    expect(seen.connections).toBe(2)
  })
})

describe("closing", () => {
  it("close waits for the requests in flight, refuses new ones and closes idle connections", async () => {
    let answerLate: (() => void) | undefined
    const { origin } = await scripted((_request, socket, index) => {
      if (index === 1) socket.write(ok("idle"))
      else answerLate = () => socket.write(ok("late"))
    })
    const pool = poolFor(origin)
    await answer(pool)
    const inFlight = exchange(pool)
    await expect.poll(() => answerLate !== undefined).toBe(true)
    let closed = false
    const closing = pool.close().then(() => (closed = true))
    expect(await failure(pool)).toBe("the connection pool is closed")
    expect(closed).toBe(false)
    answerLate!()
    expect((await inFlight.outcome).answer?.body).toBe("late")
    await closing
    expect(pool.idleCount).toBe(0)
  })

  it("destroy fails the requests in flight", async () => {
    const { origin, seen } = await scripted(() => {})
    const pool = poolFor(origin)
    const hanging = exchange(pool)
    await expect.poll(() => seen.requests.length).toBe(1)
    pool.destroy()
    expect((await hanging.outcome).error?.message).toBe("the gateway closed its connections to the app (shutting down)")
  })
})

describe("https", () => {
  it("talks TLS to an https origin, with a real HTTP server", async () => {
    const server = createHttpsServer({ cert, key }, (req, res) => {
      let body = ""
      req.on("data", (chunk) => (body += chunk))
      req.on("end", () => res.end(JSON.stringify({ echo: body, method: req.method })))
    })
    const port = await listen(server)
    const pool = poolFor(`https://localhost:${port}`, { tls: { ca: cert } })
    expect(JSON.parse((await answer(pool, "hello")).body)).toEqual({ echo: "hello", method: "POST" })
    expect(JSON.parse((await answer(pool)).body)).toEqual({ echo: "", method: "GET" })
  })

  it("resumes the TLS session on its next connection", async () => {
    const server = createHttpsServer({ cert, key }, (req, res) => {
      res.setHeader("connection", "close")
      res.end(JSON.stringify({ resumed: (req.socket as TLSSocket).isSessionReused() }))
    })
    const port = await listen(server)
    const pool = poolFor(`https://localhost:${port}`, { tls: { ca: cert } })
    expect(JSON.parse((await answer(pool)).body)).toEqual({ resumed: false })
    expect(JSON.parse((await answer(pool)).body)).toEqual({ resumed: true })
  })

  it("refuses a certificate it does not trust", async () => {
    const server = createHttpsServer({ cert, key }, (_req, res) => res.end("{}"))
    const port = await listen(server)
    const error = (await exchange(poolFor(`https://localhost:${port}`)).outcome).error as NodeJS.ErrnoException
    expect(error.code).toBe("DEPTH_ZERO_SELF_SIGNED_CERT")
  })
})

describe("against node's HTTP server", () => {
  it("keeps one connection for calls one after another, and reads its chunked answers", async () => {
    const server = createHttpServer((req, res) => {
      res.write("{\"url\":")
      res.end(JSON.stringify(req.url) + "}")
    })
    const port = await listen(server)
    const pool = poolFor(`http://127.0.0.1:${port}`)
    const connections = new Set<unknown>()
    server.on("connection", (socket) => connections.add(socket))
    for (let i = 0; i < 5; i++) expect(JSON.parse((await answer(pool)).body)).toEqual({ url: "/call" })
    expect(connections.size).toBe(1)
    server.closeAllConnections()
  })
})
