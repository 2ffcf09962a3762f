import type { TestModule } from "vitest/node"
import { defineConfig } from "vitest/config"

/** Ends the run with a plain `N passed, N failed` line that any CI log reader understands. */
const summaryLine = {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>) {
    let passed = 0
    let failed = 0
    let skipped = 0
    for (const module of testModules) {
      for (const test of module.children.allTests()) {
        const state = test.result().state
        if (state === "passed") passed++
        else if (state === "failed") failed++
        else skipped++
      }
    }
    process.stdout.write(`\n${passed} passed, ${failed} failed${skipped > 0 ? `, ${skipped} skipped` : ""}\n`)
  }
}

export default defineConfig({
  // The package's own entry points (`examples/` imports them as an app would) are its sources here.
  resolve: {
    alias: {
      "realtime-gateway/app": new URL("./src/sdk/index.ts", import.meta.url).pathname,
      "realtime-gateway/testing": new URL("./src/testing/index.ts", import.meta.url).pathname
    }
  },
  test: {
    testTimeout: 30_000,
    hookTimeout: 60_000,
    reporters: ["default", summaryLine],
    projects: [
      {
        extends: true,
        test: { name: "gateway", include: ["test/**/*.test.ts", "examples/**/*.test.ts"], exclude: ["test/cluster/**"] }
      },
      {
        // Each cluster file runs four or more gateway processes and PostgreSQL:
        // one file at a time, and only after the other tests, or on 2 cores
        // their event loops starve each other and failover timings stop
        // meaning anything.
        extends: true,
        test: {
          name: "cluster",
          include: ["test/cluster/**/*.test.ts"],
          fileParallelism: false,
          sequence: { groupOrder: 1 }
        }
      }
    ]
  }
})
