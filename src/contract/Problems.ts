/** The problems of a refused input, as answers and logs list them: `{path, message}`. */
import { Schema, SchemaIssue } from "effect"
import { formatJsonPath } from "../protocol/json.ts"

/** One problem; `path` looks like `channels[0].variables.id.pattern` ("" = the input itself). */
export const Problem = Schema.Struct({ path: Schema.String, message: Schema.String })
export type Problem = typeof Problem.Type

const formatIssues = SchemaIssue.makeFormatterStandardSchemaV1()

/** Every problem of a failed Schema decode as `{path, message}`. */
export const describeIssue = (issue: SchemaIssue.Issue): ReadonlyArray<Problem> =>
  formatIssues(issue).issues.map((problem) => ({
    path: formatJsonPath(problem.path ?? []),
    message: problem.message
  }))
