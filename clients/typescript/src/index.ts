/**
 * The seedance-bff client: every operation typed from the service's OpenAPI document
 * (`api`, openapi-fetch over the types openapi-typescript generated in ./schema.ts), and
 * what generators do not write: creates that retry safely with one Idempotency-Key, live
 * job streams over fetch() with the bearer header and exact resume, problem+json errors as
 * `ProblemError`. No framework; runs in browsers, Node 18+ and React Native (with a
 * fetch that streams, such as expo/fetch).
 */
import createFetchClient from "openapi-fetch";

import { ProblemError } from "./errors.js";
import { type Backoff, backoffDelay, isTransient, newIdempotencyKey, sleep } from "./retry.js";
import type { components, paths } from "./schema.js";
import { type FollowOptions, type JobEvent, followStream, isTerminal } from "./stream.js";
import { type Upload, type UploadOptions, sendUpload } from "./upload.js";

export type { components, operations, paths } from "./schema.js";
export { ProblemError, type FieldError, type Problem } from "./errors.js";
export type { Backoff } from "./retry.js";
export type { FollowOptions, JobEvent, QueueSpot } from "./stream.js";
export type { Upload, UploadOptions, UploadProgress } from "./upload.js";

type Schemas = components["schemas"];
export type Job = Schemas["JobOut"];
export type JobCreate = Schemas["JobCreate"];
export type Batch = Schemas["BatchOut"];
export type BatchCreate = Schemas["BatchCreate"];
export type JobPage = Schemas["JobPage"];
export type PromoteRequest = Schemas["PromoteRequest"];
export type ListJobsQuery = NonNullable<paths["/jobs"]["get"]["parameters"]["query"]>;
export type UploadPage = Schemas["UploadPage"];

/** A job's input file: a public https URL, an upload's `reference`, or the upload itself. */
export type MediaInput = string | Upload;
const INPUT_FIELDS = ["images", "reference_video_urls", "reference_audio_urls"] as const;
type InputField = (typeof INPUT_FIELDS)[number];
type WithUploads<T> = T extends unknown
  ? Omit<T, InputField> & { [K in Extract<keyof T, InputField>]?: MediaInput[] | null }
  : never;
/** A job body whose inputs may be uploads as `upload()` returned them */
export type JobRequest = WithUploads<JobCreate>;
export type BatchRequest =
  | { jobs: JobRequest[] }
  | { base?: WithUploads<Schemas["JobParams"]> | null; prompts: string[] };

/** The body as the API takes it: each upload given as itself becomes its `reference`. */
function withReferences<T extends object>(body: T): T {
  const copy = { ...body } as Record<string, unknown>;
  for (const field of INPUT_FIELDS) {
    const values = copy[field];
    if (Array.isArray(values)) {
      copy[field] = values.map((value: MediaInput) =>
        typeof value === "string" ? value : value.reference,
      );
    }
  }
  return copy as T;
}

const jobBody = (body: JobRequest) => withReferences(body) as unknown as JobCreate;
const batchBody = (body: BatchRequest): BatchCreate =>
  "jobs" in body
    ? { jobs: body.jobs.map(jobBody) }
    : ({ ...body, base: body.base ? withReferences(body.base) : body.base } as BatchCreate);

export interface ClientOptions {
  /** The service's address, e.g. `https://api.example.com` */
  baseUrl: string;
  /** The bearer token, or a function giving a fresh one for each request */
  token: string | (() => string | Promise<string>);
  /** Another fetch (tests, React Native's streaming fetch); default: the global one */
  fetch?: typeof fetch;
  /** Tries of a create (network failures, 429, 5xx), with the same Idempotency-Key. Default 4 */
  createAttempts?: number;
  backoff?: Backoff;
}

export interface CreateOptions {
  /** Default: a new UUID. Pass your own to make a create safe across page reloads. */
  idempotencyKey?: string;
  signal?: AbortSignal;
}

type Answer<T> = { data?: T; error?: unknown; response: Response };

const keyed = (key: string) => ({ header: { "Idempotency-Key": key } });
const cancel = ({ signal }: CreateOptions) => (signal ? { signal } : {});

export function createSeedanceClient(options: ClientOptions) {
  const baseUrl = options.baseUrl.replace(/\/+$/, "");
  const fetchImpl = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  const token = async () =>
    typeof options.token === "function" ? await options.token() : options.token;
  const authorization = async () => ({ Authorization: `Bearer ${await token()}` });

  const api = createFetchClient<paths>({ baseUrl, fetch: (request) => fetchImpl(request) });
  api.use({
    async onRequest({ request }) {
      request.headers.set("Authorization", (await authorization()).Authorization);
      return request;
    },
  });

  /** The body of a successful answer, or its problem as a ProblemError. */
  async function unwrap<T>(answer: Promise<Answer<T>>): Promise<T> {
    const { data, error, response } = await answer;
    if (!response.ok) throw await ProblemError.fromResponse(response, error);
    return data as T;
  }

  /** A create, tried again after failures that may not have reached the service (or may
   * have: the same Idempotency-Key makes the service answer with what it recorded). */
  async function create<T>(send: (key: string) => Promise<Answer<T>>, opts: CreateOptions) {
    const key = opts.idempotencyKey ?? newIdempotencyKey();
    const attempts = options.createAttempts ?? 4;
    for (let attempt = 1; ; attempt++) {
      try {
        return await unwrap(send(key));
      } catch (error) {
        if (attempt >= attempts || opts.signal?.aborted || !isTransient(error)) throw error;
        await sleep(backoffDelay(attempt, error, options.backoff), opts.signal);
      }
    }
  }

  function stream(path: string, follow: FollowOptions, isLast: (event: JobEvent) => boolean) {
    return followStream(
      { url: `${baseUrl}${path}`, fetch: fetchImpl, headers: authorization },
      { backoff: options.backoff ?? {}, ...follow },
      isLast,
    );
  }

  return {
    /** Every operation of the document, typed: `api.GET("/me/usage")`, ... */
    api,
    /** A file of the user's (an image, a reference video or audio) as an upload, to give
     * as it is in a job's `images`, `reference_video_urls` or `reference_audio_urls`. Not
     * retried: each try would be a new upload. */
    upload: (file: Blob, opts: UploadOptions = {}): Promise<Upload> =>
      sendUpload({ url: `${baseUrl}/uploads`, fetch: fetchImpl, authorization }, file, opts),
    getUpload: (uploadId: string): Promise<Upload> =>
      unwrap(api.GET("/uploads/{upload_id}", { params: { path: { upload_id: uploadId } } })),
    listUploads: (query: { limit?: number; cursor?: string } = {}): Promise<UploadPage> =>
      unwrap(api.GET("/uploads", { params: { query } })),
    deleteUpload: async (uploadId: string): Promise<void> => {
      await unwrap(api.DELETE("/uploads/{upload_id}", { params: { path: { upload_id: uploadId } } }));
    },
    createJob: (body: JobRequest, opts: CreateOptions = {}): Promise<Job> =>
      create(
        (key) => api.POST("/jobs", { body: jobBody(body), params: keyed(key), ...cancel(opts) }),
        opts,
      ),
    createBatch: (body: BatchRequest, opts: CreateOptions = {}): Promise<Batch> =>
      create(
        (key) =>
          api.POST("/jobs/batch", { body: batchBody(body), params: keyed(key), ...cancel(opts) }),
        opts,
      ),
    promoteJob: (jobId: string, body: PromoteRequest = {}, opts: CreateOptions = {}): Promise<Job> =>
      create(
        (key) =>
          api.POST("/jobs/{job_id}/promote", {
            body,
            params: { path: { job_id: jobId }, ...keyed(key) },
            ...cancel(opts),
          }),
        opts,
      ),
    getJob: (jobId: string): Promise<Job> =>
      unwrap(api.GET("/jobs/{job_id}", { params: { path: { job_id: jobId } } })),
    listJobs: (query: ListJobsQuery = {}): Promise<JobPage> =>
      unwrap(api.GET("/jobs", { params: { query } })),
    cancelJob: (jobId: string): Promise<Job> =>
      unwrap(api.POST("/jobs/{job_id}/cancel", { params: { path: { job_id: jobId } } })),
    deleteJob: async (jobId: string): Promise<void> => {
      await unwrap(api.DELETE("/jobs/{job_id}", { params: { path: { job_id: jobId } } }));
    },
    /** The job's moves, live, until it is succeeded, failed or canceled (its latest move
     * first, or every move after `lastEventId`). */
    followJob: (jobId: string, follow: FollowOptions = {}) =>
      stream(`/jobs/${encodeURIComponent(jobId)}/events`, follow, isTerminal),
    /** Every move of every job of yours, from now on (or after `lastEventId`), until aborted. */
    followMyJobs: (follow: FollowOptions = {}) => stream("/events", follow, () => false),
  };
}

export type SeedanceClient = ReturnType<typeof createSeedanceClient>;
