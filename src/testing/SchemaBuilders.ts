/**
 * Typed builders for the channel-schema documents a fake app serves: the
 * contract's own types (`contract/SchemaDocument.ts`), so that a test's schema
 * is checked by the compiler and by the contract's Schema before the gateway
 * ever fetches it. An intentionally invalid document (to test the gateway's
 * refusal) goes through `FakeApp.setSchemaRaw` instead.
 */
import { Schema } from "effect"
import { SchemaDocument as SchemaDocumentSchema } from "../contract/SchemaDocument.ts"
import type { SchemaDocument, SchemaEvent } from "./FakeApp.ts"

const decodeDocument = Schema.decodeUnknownResult(SchemaDocumentSchema, { errors: "all" })

/**
 * Returns the document as given, after checking it against the contract's
 * shape; throws with every problem when it does not fit.
 */
export const schemaDocument = <const D extends SchemaDocument>(doc: D): D => {
  const decoded = decodeDocument(doc)
  if (decoded._tag === "Failure") throw new Error(`not a schema document: ${String(decoded.failure)}`)
  return doc
}

/** A channel: its topic pattern and the rest of its definition (the SDK's builder). */
export { channel } from "../sdk/App.ts"

/** An event allowed on the given channel patterns (`["*"]` for any topic). */
export const event = (
  name: string,
  allowedChannels: ReadonlyArray<string>,
  definition: Omit<SchemaEvent, "name" | "allowedChannels" | "channels"> = {}
): SchemaEvent => ({ name, allowedChannels, ...definition })
