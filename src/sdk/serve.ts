/**
 * Serves a fetch handler with `node:http`, for Node (Bun and Deno take the
 * handler as it is: `Bun.serve({ fetch: app.fetch })`, `Deno.serve(app.fetch)`).
 */
import { createServer } from "node:http"
import type { IncomingMessage, ServerResponse } from "node:http"
import type { AddressInfo } from "node:net"
import { Readable } from "node:stream"

export interface ServeOptions {
  /** 0 (the default) picks a free port. */
  readonly port?: number
  /** 127.0.0.1 when omitted. */
  readonly host?: string
}

export interface Served {
  /** e.g. `http://127.0.0.1:40123` */
  readonly url: string
  readonly port: number
  close(): Promise<void>
}

const toRequest = (incoming: IncomingMessage, origin: string): Request => {
  const headers = new Headers()
  for (const [name, value] of Object.entries(incoming.headers)) {
    if (Array.isArray(value)) for (const each of value) headers.append(name, each)
    else if (value !== undefined) headers.set(name, value)
  }
  const method = incoming.method ?? "GET"
  const hasBody = method !== "GET" && method !== "HEAD"
  return new Request(new URL(incoming.url ?? "/", origin), {
    method,
    headers,
    ...(hasBody ? { body: Readable.toWeb(incoming) as ReadableStream<Uint8Array>, duplex: "half" } : {})
  })
}

const send = async (response: Response, res: ServerResponse): Promise<void> => {
  const headers: Record<string, string> = {}
  response.headers.forEach((value, name) => {
    headers[name] = value
  })
  const body = response.body === null ? undefined : Buffer.from(await response.arrayBuffer())
  if (body !== undefined) headers["content-length"] = String(body.length)
  res.writeHead(response.status, headers)
  res.end(body)
}

export const serve = async (handler: (request: Request) => Promise<Response>, options: ServeOptions = {}): Promise<Served> => {
  const host = options.host ?? "127.0.0.1"
  const urlHost = host.includes(":") ? `[${host}]` : host
  let origin = ""
  const server = createServer((incoming, res) => {
    handler(toRequest(incoming, origin))
      .then((response) => send(response, res))
      .catch((error: unknown) => {
        if (!res.headersSent) {
          res.writeHead(500, { "content-type": "application/json" })
          res.end(JSON.stringify({ reason: "internal_error" }))
        } else res.destroy()
        console.error("realtime app: unexpected error serving a request", error)
      })
  })
  // Outlives the gateway's pooled idle connections, so reuse never races a server-side close.
  server.keepAliveTimeout = 60_000
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    server.listen(options.port ?? 0, host, () => {
      server.off("error", reject)
      resolve()
    })
  })
  const port = (server.address() as AddressInfo).port
  origin = `http://${urlHost}:${port}`
  return {
    url: origin,
    port,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()))
        server.closeAllConnections()
      })
  }
}
