/**
 * The actions an app answers a forwarded message with (CONTRACT §3): one
 * action or an array of them.
 *
 * `MessageAnswer` (in the contract) is the definition; `parseMessageAnswer` is the decoder the
 * push path runs, written by hand because it runs for every push and the
 * generic decoder cost a measurable share of a round trip. A test holds the
 * two to the same verdicts.
 */
import { isAppEventName } from "../contract/Messages.ts"
import type { Action } from "../contract/Messages.ts"
import { isJsonObject, itemOrItemsLevels, parseJsonText } from "../protocol/json.ts"


const isOptional = (value: unknown, is: (value: unknown) => boolean) => value === undefined || is(value)
const isNonEmptyString = (value: unknown) => typeof value === "string" && value.length > 0
const isBoolean = (value: unknown) => typeof value === "boolean"

const isAction = (value: unknown): value is Action => {
  if (!isJsonObject(value)) return false
  switch (value["action"]) {
    case "reply":
    case "noreply":
      return true
    case "error":
      return "reason" in value
    case "broadcast":
      return isAppEventName(value["event"]) &&
        isOptional(value["topic"], isNonEmptyString) &&
        isOptional(value["exclude_sender"], isBoolean)
    default:
      return false
  }
}

/** The actions of a message answer's body, in order; undefined when the body is not a valid answer. */
export const parseMessageAnswer = (body: string): ReadonlyArray<Action> | undefined => {
  // an array of actions around each action's data, or one action around its data
  const value = parseJsonText(body, itemOrItemsLevels(body, 1))
  if (Array.isArray(value)) return value.every(isAction) ? value : undefined
  return isAction(value) ? [value] : undefined
}
