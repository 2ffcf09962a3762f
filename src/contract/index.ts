/**
 * Everything that crosses the boundary between the gateway and an app, as
 * Effect Schemas, declared once: the gateway decodes with them, the SDK
 * (`realtime-gateway/app`) and the test kit (`realtime-gateway/testing`)
 * type and check with them.
 */
export * from "./Auth.ts"
export * from "./Endpoints.ts"
export * from "./Messages.ts"
export * from "./Notifications.ts"
export * from "./Problems.ts"
export * from "./SchemaDocument.ts"
export * from "./ServerApi.ts"
export * from "./Signature.ts"
