import { ProblemError } from "./errors.js";

export interface Backoff {
  /** first wait, in ms (default 500) */
  initialMs?: number;
  /** longest wait, in ms (default 30 000) */
  maxMs?: number;
}

/**
 * How long to wait before try `attempt` (1, 2, ...): what `Retry-After` said, else
 * exponential backoff with full jitter, so that clients cut off together do not come back
 * together.
 */
export function backoffDelay(attempt: number, error: unknown, backoff: Backoff = {}): number {
  const maxMs = backoff.maxMs ?? 30_000;
  if (error instanceof ProblemError && error.retryAfterSeconds !== undefined) {
    return Math.min(error.retryAfterSeconds * 1000, maxMs);
  }
  const ceiling = Math.min(maxMs, (backoff.initialMs ?? 500) * 2 ** (attempt - 1));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

/** A stream that stayed silent past its heartbeat timeout (it is reopened). */
export class HeartbeatTimeout extends Error {
  override readonly name = "HeartbeatTimeout";
}

/** A network failure, a silent stream or a retryable answer: worth another try (with the
 * same request). */
export function isTransient(error: unknown): boolean {
  if (error instanceof ProblemError) return error.retryable;
  return error instanceof TypeError || error instanceof HeartbeatTimeout;
}

/** Wait `ms`, or less if `signal` aborts (then resolve, the caller checks the signal). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** A fresh Idempotency-Key (a UUID): one per create, the same for every retry of it. */
export function newIdempotencyKey(): string {
  const crypto = globalThis.crypto;
  if (typeof crypto?.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16)); // React Native: a polyfill
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}
