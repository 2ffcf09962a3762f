/** Small JSON helpers shared by the decoders of client frames and app answers. */

/** The value of a JSON text; undefined when the text is not JSON (JSON itself has no undefined). */
export const parseJsonText = (text: string): unknown => {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

/** A JSON object: not null, not an array. */
export const isJsonObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)
