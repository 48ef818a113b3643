/**
 * Uploads of the user's own files (`POST /uploads`), with progress: XMLHttpRequest where
 * there is one (browsers, React Native: fetch cannot report an upload's progress), else
 * fetch with a streamed multipart body whose bytes are counted as they are sent (Node).
 */
import { ProblemError } from "./errors.js";
import type { components } from "./schema.js";

export type Upload = components["schemas"]["UploadOut"];

export interface UploadProgress {
  /** bytes of the request sent so far */
  loaded: number;
  /** bytes of the whole request */
  total: number;
}

export interface UploadOptions {
  onProgress?: (progress: UploadProgress) => void;
  signal?: AbortSignal;
  /** The file's name, for a Blob that has none (a File has its own) */
  filename?: string;
}

export interface UploadTarget {
  url: string;
  fetch: typeof fetch;
  authorization: () => Promise<{ Authorization: string }>;
}

const nameOf = (file: Blob, options: UploadOptions) =>
  options.filename ?? (typeof File !== "undefined" && file instanceof File ? file.name : "upload");

export async function sendUpload(
  target: UploadTarget,
  file: Blob,
  options: UploadOptions,
): Promise<Upload> {
  const headers = await target.authorization();
  if (typeof XMLHttpRequest !== "undefined") return viaXhr(target.url, headers, file, options);
  return viaFetch(target, headers, file, options);
}

function viaXhr(
  url: string,
  headers: Record<string, string>,
  file: Blob,
  options: UploadOptions,
): Promise<Upload> {
  const form = new FormData();
  form.append("file", file, nameOf(file, options));
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) options.onProgress?.({ loaded: event.loaded, total: event.total });
    };
    xhr.onload = async () => {
      const response = new Response(xhr.responseText, {
        status: xhr.status,
        headers: { "Content-Type": xhr.getResponseHeader("Content-Type") ?? "application/json" },
      });
      if (response.ok) resolve((await response.json()) as Upload);
      else reject(await ProblemError.fromResponse(response));
    };
    xhr.onerror = () => reject(new TypeError("the upload failed: network error"));
    xhr.onabort = () => reject(new DOMException("the upload was aborted", "AbortError"));
    options.signal?.addEventListener("abort", () => xhr.abort(), { once: true });
    xhr.send(form);
  });
}

async function viaFetch(
  target: UploadTarget,
  headers: Record<string, string>,
  file: Blob,
  options: UploadOptions,
): Promise<Upload> {
  const boundary = `seedance-bff-${crypto.randomUUID()}`;
  const name = nameOf(file, options).replace(/["\r\n]/g, "_");
  const encoder = new TextEncoder();
  const head = encoder.encode(
    `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${name}"\r\n` +
      `Content-Type: ${file.type || "application/octet-stream"}\r\n\r\n`,
  );
  const tail = encoder.encode(`\r\n--${boundary}--\r\n`);
  const total = head.byteLength + file.size + tail.byteLength;
  let loaded = 0;
  const reader = file.stream().getReader();
  let started = false;
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      let chunk: Uint8Array | undefined;
      if (!started) {
        started = true;
        chunk = head;
      } else {
        const next = await reader.read();
        chunk = next.done ? undefined : next.value;
      }
      if (chunk === undefined) {
        controller.enqueue(tail);
        loaded += tail.byteLength;
        options.onProgress?.({ loaded, total });
        controller.close();
        return;
      }
      controller.enqueue(chunk);
      loaded += chunk.byteLength;
      options.onProgress?.({ loaded, total });
    },
    cancel: (reason) => reader.cancel(reason),
  });
  const response = await target.fetch(target.url, {
    method: "POST",
    headers: { ...headers, "Content-Type": `multipart/form-data; boundary=${boundary}` },
    body,
    // a streamed request body (fetch's own rule)
    duplex: "half",
    ...(options.signal ? { signal: options.signal } : {}),
  } as RequestInit);
  if (!response.ok) throw await ProblemError.fromResponse(response);
  return (await response.json()) as Upload;
}
