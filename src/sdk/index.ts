/**
 * The SDK for apps behind the gateway, published as `realtime-gateway/app`:
 * define channels and events with Effect Schema, serve the four calls the
 * gateway makes (`defineApp`), and call the gateway's server API
 * (`makeServerApiClient`). The contract's Schemas are exported too, for apps
 * that handle a call themselves.
 */
export * from "./App.ts"
export * from "./serve.ts"
export * from "./ServerApiClient.ts"
export * as Contract from "../contract/index.ts"
