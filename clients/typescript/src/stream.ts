import { createParser, type EventSourceMessage } from "eventsource-parser";

import { ProblemError } from "./errors.js";
import { type Backoff, HeartbeatTimeout, backoffDelay, isTransient, sleep } from "./retry.js";
import type { components } from "./schema.js";

/** One move of a job, with the job as it is now: the `data` of each SSE `job` event. */
export type JobEvent = components["schemas"]["JobEventOut"];
/** A waiting job's new place in the queue: the `data` of each SSE `queue` event. */
export type QueueSpot = components["schemas"]["QueueSpotOut"];

const TERMINAL = new Set(["succeeded", "failed", "canceled"]);

export interface FollowOptions {
  /** Stop following: the iterator then ends without an error. */
  signal?: AbortSignal;
  /** Resume after this event id (one you saw before, for instance before a page reload). */
  lastEventId?: number;
  /**
   * Reconnect when nothing (not even the service's keep-alive comment, sent every
   * SSE_HEARTBEAT_SECONDS, 15 s by default) arrived for this long. Default 45 000 ms.
   */
  heartbeatTimeoutMs?: number;
  /** Waits between reconnects (exponential, jittered; `Retry-After` wins). */
  backoff?: Backoff;
  /** Called with each waiting job's new place in the queue (`queue` events). */
  onQueue?: (spot: QueueSpot) => void;
  /** Called before each reconnect, with why the stream was lost. */
  onReconnect?: (info: { attempt: number; lastEventId: number | undefined; error: unknown }) => void;
}

export interface StreamTransport {
  url: string;
  fetch: typeof fetch;
  headers: () => Promise<Record<string, string>>;
}

/**
 * The events of one SSE stream of the service, reconnecting with `Last-Event-ID` whenever it
 * is lost (network, server restart, silence past the heartbeat timeout), so that no event is
 * lost or repeated. Ends when `isLast(event)`, or on abort; throws a `ProblemError` for an
 * answer that retrying cannot change (401, 403, 404, 422).
 */
export async function* followStream(
  transport: StreamTransport,
  options: FollowOptions,
  isLast: (event: JobEvent) => boolean,
): AsyncGenerator<JobEvent, void, undefined> {
  const { signal } = options;
  let lastEventId = options.lastEventId;
  let failures = 0;
  while (!signal?.aborted) {
    let error: unknown;
    try {
      for await (const { id, event } of connect(transport, lastEventId, options)) {
        failures = 0;
        lastEventId = id;
        if (event === undefined) continue; // `ready`: where a stream "from now on" starts
        yield event;
        if (isLast(event)) return;
      }
      error = new Error("the stream ended (server shutdown)");
    } catch (caught) {
      if (signal?.aborted) return;
      if (!isTransient(caught)) throw caught;
      error = caught;
    }
    failures += 1;
    options.onReconnect?.({ attempt: failures, lastEventId, error });
    await sleep(backoffDelay(failures, error, options.backoff), signal);
  }
}

/** One connection: the id of each event and, for `job` events, the move; until the
 * stream ends or fails. */
async function* connect(
  transport: StreamTransport,
  lastEventId: number | undefined,
  options: FollowOptions,
): AsyncGenerator<{ id: number; event?: JobEvent }, void, undefined> {
  const controller = new AbortController();
  const stop = () => controller.abort();
  options.signal?.addEventListener("abort", stop, { once: true });
  const heartbeatMs = options.heartbeatTimeoutMs ?? 45_000;
  let watchdog: ReturnType<typeof setTimeout> | undefined;
  const rearm = () => {
    clearTimeout(watchdog);
    watchdog = setTimeout(() => controller.abort(new HeartbeatTimeout()), heartbeatMs);
  };
  try {
    rearm();
    const headers = { ...(await transport.headers()), Accept: "text/event-stream" };
    const response = await transport.fetch(transport.url, {
      headers: lastEventId === undefined ? headers : { ...headers, "Last-Event-ID": `${lastEventId}` },
      signal: controller.signal,
      cache: "no-store",
    });
    if (!response.ok) throw await ProblemError.fromResponse(response);
    if (response.body === null) throw new TypeError("this fetch() cannot stream a response body");
    const messages: EventSourceMessage[] = [];
    const parser = createParser({ onEvent: (message) => messages.push(message) });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        rearm(); // keep-alive comments count: the connection is alive
        parser.feed(decoder.decode(value, { stream: true }));
        for (const message of messages.splice(0)) {
          const id = Number(message.id);
          if (message.event === "job") yield { id, event: JSON.parse(message.data) as JobEvent };
          else if (message.event === "ready") yield { id };
          else if (message.event === "queue") options.onQueue?.(JSON.parse(message.data) as QueueSpot);
        }
      }
    } finally {
      reader.cancel().catch(() => undefined);
    }
  } catch (error) {
    // an abort by the watchdog surfaces as its reason, or as a generic AbortError
    if (controller.signal.reason instanceof HeartbeatTimeout) throw controller.signal.reason;
    throw error;
  } finally {
    clearTimeout(watchdog);
    options.signal?.removeEventListener("abort", stop);
    controller.abort();
  }
}

export function isTerminal(event: JobEvent): boolean {
  return TERMINAL.has(event.to_status);
}
