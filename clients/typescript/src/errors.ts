import type { components } from "./schema.js";

export type Problem = components["schemas"]["Problem"];
export type FieldError = components["schemas"]["FieldError"];

/** Statuses worth trying again: throttled, or the service (or its database) briefly away. */
const RETRYABLE = new Set([408, 429, 500, 502, 503, 504]);

/**
 * An error answer of the API: its `application/problem+json` body, with the stable `code`
 * (`validation_failed`, `job_not_found`, `rate_limited`, ...) and, for validation, the
 * fields at fault in `errors` (`{field: "duration", code: "invalid_duration", ...}`).
 */
export class ProblemError extends Error {
  override readonly name = "ProblemError";
  readonly code: string;
  readonly detail: string;
  readonly errors: FieldError[];

  constructor(
    readonly status: number,
    readonly problem: Problem | undefined,
    /** from `Retry-After`, when the service said how long to wait */
    readonly retryAfterSeconds: number | undefined = undefined,
  ) {
    super(problem?.detail ?? `HTTP ${status}`);
    this.code = problem?.code ?? `http_${status}`;
    this.detail = problem?.detail ?? "";
    this.errors = problem?.errors ?? [];
  }

  /** Whether the same request may succeed later (429, 5xx). */
  get retryable(): boolean {
    return RETRYABLE.has(this.status);
  }

  /** The error of a response that is not ok, read from its problem body if it has one. */
  static async fromResponse(response: Response, body?: unknown): Promise<ProblemError> {
    const problem = (body ?? (await response.json().catch(() => undefined))) as
      | Problem
      | undefined;
    const retryAfter = Number(response.headers.get("Retry-After") ?? Number.NaN);
    return new ProblemError(
      response.status,
      typeof problem === "object" && problem !== null && "code" in problem ? problem : undefined,
      Number.isFinite(retryAfter) ? retryAfter : undefined,
    );
  }
}
