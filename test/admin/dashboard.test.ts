/**
 * The dashboard at `/admin`, driven in a real headless Chromium (Debian's
 * `chromium` package; playwright-core only drives it): the login form keeps
 * the token out of the URL and in the tab's sessionStorage, the figures move
 * as clients connect, and the actions reach clients. Screenshots are kept at
 * `.tmp/dashboard-login.png` and `.tmp/dashboard.png`.
 */
import { mkdirSync } from "node:fs"
import { chromium } from "playwright-core"
import type { Browser, Page } from "playwright-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { connectSocket, nextMessage, startFakeApp, startTestGateway } from "../../src/testing/index.ts"
import type { Channel } from "phoenix"
import type { ConnectedSocket, FakeApp, TestGateway } from "../../src/testing/index.ts"

const TOKEN = "dashboard-test-admin-token"
const SCREENSHOT = ".tmp/dashboard.png"

let app: FakeApp
let gateway: TestGateway
let browser: Browser
let page: Page
const sockets: Array<ConnectedSocket> = []
const channels: Array<Channel> = []

beforeAll(async () => {
  app = await startFakeApp()
  gateway = await startTestGateway({ adminToken: TOKEN, nodeName: "node-1", apps: [{ id: "chat", fakeApp: app }] })
  browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"] })
  page = await browser.newPage({ viewport: { width: 1440, height: 1000 }, colorScheme: "dark" })
}, 60_000)

afterAll(async () => {
  await browser?.close()
  await Promise.all(sockets.map((socket) => socket.close()))
  await gateway?.close()
  await app?.close()
})

const text = (selector: string) => page.locator(selector).innerText()

/** Waits until the element's text is `expected` (the page polls every 2 s). */
const showsText = (selector: string, expected: string) =>
  page.waitForFunction(
    // runs in the page
    ([selector, expected]) =>
      (globalThis as any).document.querySelector(selector)?.textContent?.trim() === expected,
    [selector, expected] as const,
    { timeout: 10_000 }
  )

describe("the dashboard", () => {
  it("asks for the token, refuses a wrong one, and keeps the right one in sessionStorage, never in the URL", async () => {
    const requests: Array<string> = []
    page.on("request", (request) => requests.push(request.url()))
    await page.goto(`${gateway.url}/admin`)
    mkdirSync(".tmp", { recursive: true })
    await page.screenshot({ path: ".tmp/dashboard-login.png" })
    await page.locator("#token").fill("not-the-token")
    await page.locator("#login-form button").click()
    await showsText("#login-error", "That token was refused.")
    expect(await page.locator("#dashboard").isHidden()).toBe(true)

    await page.locator("#token").fill(TOKEN)
    await page.locator("#login-form button").click()
    await page.locator("#dashboard").waitFor({ state: "visible" })
    await showsText("#health", "1/1 nodes ready")
    expect(await page.evaluate(() => sessionStorage.getItem("realtime-gateway.admin-token"))).toBe(TOKEN)
    expect(requests.every((url) => !url.includes(TOKEN))).toBe(true)
    expect(requests.every((url) => url.startsWith(gateway.url))).toBe(true)
    expect(await text("#nodes tbody")).toContain("node-1")
  }, 30_000)

  it("shows the connections rise as clients connect, cluster-wide and for the app", async () => {
    await showsText("#f-connections", "0")
    for (const token of ["token-alice", "token-bob", "token-bob"]) {
      const socket = await connectSocket(gateway.socketUrl, { app: "chat", token })
      channels.push((await socket.join("room:lobby")).channel)
      sockets.push(socket)
    }
    await showsText("#f-connections", "3")
    await showsText("#f-channels", "3")
    await showsText('#apps tr[data-app="chat"] .app-connections', "3")
    expect(await text('#apps tr[data-app="chat"]')).toContain("v1")
  }, 30_000)

  it("runs the actions: a test broadcast reaches a subscriber, a disconnect closes a client's connections", async () => {
    const row = page.locator('#apps tr[data-app="chat"]')
    const bobGets = nextMessage(channels[1]!, "admin_test")
    await row.getByText("Broadcast…").click()
    await page.locator("#field-topic").fill("room:lobby")
    await page.locator("#field-payload").fill('{"hello": "from the dashboard"}')
    await page.locator("#action-go").click()
    expect(await bobGets).toEqual({ hello: "from the dashboard" })
    await page.locator("#toast").getByText("broadcast to room:lobby accepted").waitFor()

    await row.getByText("Disconnect…").click()
    await page.locator("#field-client").fill("bob")
    await page.locator("#action-go").click()
    const closes = await Promise.all([sockets[1]!.closed, sockets[2]!.closed])
    expect(closes.map((close) => close.code)).toEqual([1008, 1008])
    await page.locator("#toast").getByText("2 connection(s) of bob closed").waitFor()
    await showsText("#f-connections", "1")

    await row.getByText("Refresh schema").click()
    await page.locator("#toast").getByText("chat: schema version 1 in force").waitFor()

    await page.screenshot({ path: SCREENSHOT, fullPage: true })
  }, 30_000)
})
