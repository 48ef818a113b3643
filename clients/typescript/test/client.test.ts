/**
 * The client against the real service (and the Seedance simulator behind it), which
 * tests/integration/test_typescript_client.py starts and names in SEEDANCE_BFF_URL, with a
 * user's token in SEEDANCE_BFF_TOKEN.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { test } from "node:test";

import {
  type JobEvent,
  ProblemError,
  type UploadProgress,
  createSeedanceClient,
} from "../src/index.js";

const baseUrl = process.env.SEEDANCE_BFF_URL ?? "";
const token = process.env.SEEDANCE_BFF_TOKEN ?? "";
assert.ok(baseUrl && token, "SEEDANCE_BFF_URL and SEEDANCE_BFF_TOKEN must be set");
const prompt = "a paper boat drifting down a rainy street";

async function collect(events: AsyncIterable<JobEvent>): Promise<JobEvent[]> {
  const seen: JobEvent[] = [];
  for await (const event of events) seen.push(event);
  return seen;
}

/** Every recorded move of a job, read in one go (Last-Event-ID 0: all of them). */
async function history(jobId: string): Promise<number[]> {
  const client = createSeedanceClient({ baseUrl, token });
  const events = await collect(client.followJob(jobId, { lastEventId: 0 }));
  return events.map((event) => event.event_id);
}

test("create a job and follow it to succeeded, with a video in our storage", async () => {
  const client = createSeedanceClient({ baseUrl, token });
  const job = await client.createJob({ prompt, duration: 5, resolution: "480p" });
  assert.equal(job.status, "queued");
  const events = await collect(client.followJob(job.id));
  const last = events.at(-1);
  assert.equal(last?.job.status, "succeeded");
  assert.ok(last?.job.video_url, "a succeeded job has a signed video URL");
  const video = await fetch(new URL(last.job.video_url, baseUrl));
  assert.equal(video.status, 200);
  assert.equal(video.headers.get("content-type"), "video/mp4");
  assert.equal((await client.getJob(job.id)).status, "succeeded");
});

test("a create whose answer is lost is retried with the same Idempotency-Key: one job", async () => {
  const keys: string[] = [];
  const created: string[] = [];
  const losesFirstAnswer: typeof fetch = async (input, init) => {
    const request = new Request(input, init);
    keys.push(request.headers.get("Idempotency-Key") ?? "");
    const response = await fetch(request);
    if (keys.length === 1) {
      created.push(((await response.json()) as { id: string }).id);
      throw new TypeError("network connection lost"); // the service recorded it; we never knew
    }
    return response;
  };
  const client = createSeedanceClient({
    baseUrl,
    token,
    fetch: losesFirstAnswer,
    backoff: { initialMs: 10 },
  });
  const job = await client.createJob({ prompt: `${prompt} (retried)` });
  assert.equal(keys.length, 2);
  assert.equal(keys[0], keys[1]);
  assert.match(keys[0] ?? "", /^[0-9a-f-]{32,36}$/);
  assert.equal(job.id, created[0]);
  const page = await createSeedanceClient({ baseUrl, token }).listJobs({ limit: 100 });
  assert.equal(page.items.filter((item) => item.prompt === `${prompt} (retried)`).length, 1);
});

test("a stream dropped mid-way resumes with Last-Event-ID: nothing lost, nothing repeated", async () => {
  let streams = 0;
  const resumedWith: (string | null)[] = [];
  /** Cuts the first stream's body after its first chunk, as a dropped connection would. */
  const dropsFirstStream: typeof fetch = async (input, init) => {
    const request = new Request(input, init);
    const response = await fetch(request);
    if (!request.url.endsWith("/events")) return response;
    streams += 1;
    resumedWith.push(request.headers.get("Last-Event-ID"));
    if (streams > 1 || response.body === null) return response;
    const reader = response.body.getReader();
    const cut = new ReadableStream<Uint8Array>({
      async pull(controller) {
        const { value } = await reader.read();
        if (value) controller.enqueue(value);
        await reader.cancel();
        controller.error(new TypeError("connection reset"));
      },
    });
    return new Response(cut, { status: response.status, headers: response.headers });
  };
  const client = createSeedanceClient({
    baseUrl,
    token,
    fetch: dropsFirstStream,
    backoff: { initialMs: 10 },
  });
  const job = await client.createJob({ prompt: `${prompt} (dropped stream)` });
  const resumedAfter: (number | undefined)[] = [];
  const events = await collect(
    client.followJob(job.id, { onReconnect: ({ lastEventId }) => resumedAfter.push(lastEventId) }),
  );
  assert.equal(streams, 2);
  assert.equal(resumedAfter.length, 1);
  assert.ok(events.some((event) => event.event_id === resumedAfter[0]));
  assert.deepEqual(resumedWith, [null, `${resumedAfter[0]}`]);
  assert.equal(events.at(-1)?.job.status, "succeeded");
  // exactly the moves the service recorded from the one that was the latest when the
  // stream opened, each once, in order
  const recorded = await history(job.id);
  const ids = events.map((event) => event.event_id);
  assert.deepEqual(ids, recorded.slice(recorded.indexOf(ids[0] ?? -1)));
});

test("a validation error comes back as a ProblemError with its field codes", async () => {
  const client = createSeedanceClient({ baseUrl, token });
  // @ts-expect-error the generated types already refuse 7 s for seedance-2.0
  const refused = client.createJob({ model: "seedance-2.0", duration: 7, prompt });
  await assert.rejects(refused, (error: unknown) => {
    assert.ok(error instanceof ProblemError);
    assert.equal(error.status, 422);
    assert.equal(error.code, "validation_failed");
    assert.deepEqual(
      error.errors.map(({ field, code }) => ({ field, code })),
      [{ field: "duration", code: "invalid_duration" }],
    );
    assert.equal(error.retryable, false);
    return true;
  });
});

test("an unknown job is a ProblemError, not endless reconnects", async () => {
  const client = createSeedanceClient({ baseUrl, token });
  const missing = "00000000-0000-4000-8000-000000000000";
  await assert.rejects(collect(client.followJob(missing)), (error: unknown) => {
    assert.ok(error instanceof ProblemError);
    assert.equal(error.code, "job_not_found");
    return true;
  });
});

test("followMyJobs survives heartbeat timeouts and stops on abort", async () => {
  const client = createSeedanceClient({ baseUrl, token, backoff: { initialMs: 10, maxMs: 50 } });
  const abort = new AbortController();
  let reconnects = 0;
  const seen: JobEvent[] = [];
  // a timeout far below the service's keep-alive: the stream goes "silent" and is reopened
  const following = (async () => {
    for await (const event of client.followMyJobs({
      signal: abort.signal,
      heartbeatTimeoutMs: 150,
      onReconnect: () => (reconnects += 1),
    })) {
      seen.push(event);
      if (event.job.prompt === `${prompt} (mine)` && event.job.status === "succeeded") {
        abort.abort();
      }
    }
  })();
  while (reconnects < 2) await new Promise((resolve) => setTimeout(resolve, 20));
  const job = await client.createJob({ prompt: `${prompt} (mine)` });
  await following; // ends quietly once aborted
  const mine = seen.filter((event) => event.job_id === job.id);
  assert.deepEqual(
    mine.map((event) => event.to_status),
    ["queued", "running", "succeeded"],
  );
  const ids = seen.map((event) => event.event_id);
  assert.deepEqual(ids, [...new Set(ids)].sort((a, b) => a - b));
});

test("upload a photo with progress, then make an image-to-video job of it", async () => {
  const path = process.env.SEEDANCE_BFF_PHOTO ?? "";
  assert.ok(path, "SEEDANCE_BFF_PHOTO must name a JPEG");
  const client = createSeedanceClient({ baseUrl, token });
  const progress: UploadProgress[] = [];
  const photo = new Blob([await readFile(path)], { type: "image/jpeg" });
  const upload = await client.upload(photo, {
    filename: "photo.jpg",
    onProgress: (step) => progress.push(step),
  });
  assert.equal(upload.kind, "image");
  assert.equal(upload.content_type, "image/jpeg");
  assert.deepEqual([upload.width, upload.height], [600, 800]);
  assert.equal(upload.reference, `upload:${upload.id}`);
  assert.ok(progress.length >= 3, "progress is reported as the body is sent");
  const loaded = progress.map((step) => step.loaded);
  assert.deepEqual(loaded, [...loaded].sort((a, b) => a - b));
  assert.equal(progress.at(-1)?.loaded, progress.at(-1)?.total);
  assert.ok((progress.at(-1)?.total ?? 0) > photo.size);
  const stored = await fetch(new URL(upload.url, baseUrl));
  assert.equal(stored.status, 200);
  assert.equal(createHash("sha256").update(Buffer.from(await stored.arrayBuffer())).digest("hex"), upload.sha256);
  // the upload itself goes in the body; the client sends its reference
  const job = await client.createJob({ prompt, images: [upload], aspect_ratio: "3:4" });
  assert.deepEqual(job.images, [upload.reference]);
  const events = await collect(client.followJob(job.id));
  assert.equal(events.at(-1)?.job.status, "succeeded");
  const batch = await client.createBatch({ base: { images: [upload], aspect_ratio: "3:4" }, prompts: ["a", "b"] });
  assert.deepEqual(batch.jobs.map((variant) => variant.images), [[upload.reference], [upload.reference]]);
});

test("a file that is not what it claims is refused with the field at fault", async () => {
  const client = createSeedanceClient({ baseUrl, token });
  const page = new Blob(["<html><body>not a picture</body></html>"], { type: "image/png" });
  await assert.rejects(client.upload(page, { filename: "cat.png" }), (error: unknown) => {
    assert.ok(error instanceof ProblemError);
    assert.equal(error.status, 422);
    assert.equal(error.code, "upload_invalid");
    assert.equal(error.errors[0]?.field, "file");
    return true;
  });
});
