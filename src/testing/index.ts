/**
 * Test kit for app teams, published as `realtime-gateway/testing`: a fake app
 * backend to point the gateway at, and promise helpers around the official
 * `phoenix` client (plus raw `ws` helpers) to drive the gateway as clients do.
 */
export * from "./Assertions.ts"
export * from "./FakeApp.ts"
export * from "./PhoenixClient.ts"
export * from "./SchemaBuilders.ts"
export * from "./TestGateway.ts"
