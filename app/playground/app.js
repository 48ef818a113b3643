// The prompt playground: a plain ES module over the public /jobs and /uploads API, as any
// frontend would use it. It never sees the Seedance key; its token lives in sessionStorage.

const $ = (selector, root = document) => root.querySelector(selector);
const TERMINAL = new Set(["succeeded", "failed", "canceled"]);
const FIELD_LABELS = {
  "base.duration": "Duration",
  "base.resolution": "Resolution",
  "base.aspect_ratio": "Aspect ratio",
  duration: "Duration",
  resolution: "Resolution",
  aspect_ratio: "Aspect ratio",
  prompt: "Prompt",
  prompts: "Prompt variants",
  "base.images": "Images",
  images: "Images",
  file: "Image",
};

const state = {
  token: sessionStorage.getItem("seedance-bff-token") || "",
  cards: new Map(), // job id -> card element
  deleted: new Set(), // ids of jobs deleted here (their late events are ignored)
  stream: null, // AbortController of the live stream
  lastEventId: null,
  images: [], // uploads to animate, in order: {id, reference, url, ...}
};

/** A failed API call, carrying its problem+json body. */
class ApiProblem extends Error {
  constructor(response, problem) {
    super(problem?.detail || `HTTP ${response.status}`);
    this.status = response.status;
    this.problem = problem || { title: response.statusText, detail: `HTTP ${response.status}` };
    this.retryAfter = response.headers.get("Retry-After");
  }
}

async function api(method, path, body, extraHeaders = {}) {
  const headers = { Authorization: `Bearer ${state.token}`, ...extraHeaders };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiProblem(response, data);
  return data;
}

// ---- errors, straight from the problem+json bodies -------------------------------------

function fieldLabel(field) {
  const variant = /^prompts\[(\d+)\]$/.exec(field) || /^jobs\[(\d+)\]\.prompt$/.exec(field);
  if (variant) return `Variant ${Number(variant[1]) + 1}`;
  const image = /^(?:base\.)?images\[(\d+)\]$/.exec(field);
  if (image) return `Image ${Number(image[1]) + 1}`;
  return FIELD_LABELS[field] || field;
}

function inputFor(field) {
  if (/^prompts/.test(field) || field === "prompt") return $("#prompts");
  if (/^(base\.)?images/.test(field) || field === "file") return $("#image-file");
  const name = field.replace(/^base\./, "");
  return $(`#create-form [name="${CSS.escape(name)}"]`);
}

function clearProblem() {
  const box = $("#problem");
  box.hidden = true;
  box.replaceChildren();
  for (const el of document.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
}

function showProblem(error) {
  const box = $("#problem");
  const problem = error instanceof ApiProblem
    ? error.problem
    : { title: "The service could not be reached", detail: String(error) };
  const title = document.createElement("h3");
  title.textContent = problem.code ? `${problem.title} (${problem.code})` : problem.title;
  const detail = document.createElement("p");
  detail.textContent = problem.detail;
  box.replaceChildren(title, detail);
  if (error.status === 429 && error.retryAfter) {
    const retry = document.createElement("p");
    retry.textContent = `You can try again in ${error.retryAfter} seconds.`;
    box.append(retry);
  }
  if (Array.isArray(problem.errors) && problem.errors.length) {
    const list = document.createElement("ul");
    for (const item of problem.errors) {
      const li = document.createElement("li");
      li.textContent = `${fieldLabel(item.field)}: ${item.message}`;
      li.dataset.code = item.code;
      list.append(li);
      inputFor(item.field)?.setAttribute("aria-invalid", "true");
    }
    box.append(list);
  }
  box.hidden = false;
  box.focus();
}

// ---- signing in --------------------------------------------------------------------------

function useToken(token) {
  state.token = token.trim();
  sessionStorage.setItem("seedance-bff-token", state.token);
  $("#who").textContent = state.token ? "Signed in." : "Not signed in.";
  follow();
  if (state.token) api("GET", "../me/credits").then(showBalance, () => {});
}

// the balance, when this deployment keeps one (a ledger with nothing in it shows nothing)
function showBalance(credits) {
  const { available, held, spent_this_month: spent } = credits;
  const expiring = (credits.expiring ?? []).reduce((sum, e) => sum + e.amount, 0);
  if (!available && !held && !spent && !expiring) return;
  let text = `Credits: ${available} available`;
  if (held) text += `, ${held} held by running jobs`;
  if (expiring) text += ` (${expiring} expire at the month's end)`;
  $("#balance").textContent = `${text}.`;
}

async function getDevToken() {
  const response = await fetch("../dev/token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user: "playground-user" }),
  });
  const data = await response.json().catch(() => null);
  if (response.status === 404) {
    throw new ApiProblem(response, {
      title: "No dev tokens here",
      detail: "This deployment does not issue dev tokens: paste a token from your identity provider.",
    });
  }
  if (!response.ok) throw new ApiProblem(response, data);
  $("#token").value = data.token;
  useToken(data.token);
  $("#who").textContent = `Signed in as ${data.user} (dev token).`;
}

// ---- job cards -----------------------------------------------------------------------------

function describe(job) {
  const parts = [job.model, `${job.duration}s`, job.resolution, job.aspect_ratio];
  const cost = job.cost ?? {};
  if (cost.charged) parts.push(`${cost.charged} credits charged`);
  else if (cost.refunded) parts.push(`${cost.refunded} credits refunded`);
  else if (cost.held) parts.push(`${cost.held} credits held`);
  else parts.push(`${job.estimated_cost} credits`);
  return parts.join(" · ");
}

function render(job) {
  if (state.deleted.has(job.id)) return; // a late live event of a deleted job
  let card = state.cards.get(job.id);
  if (!card) {
    card = $("#job-card").content.firstElementChild.cloneNode(true);
    card.dataset.jobId = job.id;
    card.dataset.model = job.model;
    $(".promote", card).addEventListener("submit", (event) => promote(event, job.id));
    $(".delete", card).addEventListener("click", () => remove(job.id));
    $(".report", card).addEventListener("click", () => report(job.id));
    state.cards.set(job.id, card);
    $("#results").append(card);
  }
  if (card.dataset.updated && card.dataset.updated > job.updated_at) return; // stale
  card.dataset.updated = job.updated_at;
  card.dataset.status = job.status;
  const text = job.prompt ?? `${job.images.length} image(s)`;
  $(".prompt", card).textContent = job.source_job_id ? `Full render: ${text}` : text;
  const status = $(".status", card);
  status.textContent = job.status === "queued" ? queued(job.queue_position, job.estimated_start_at) : job.status;
  status.dataset.status = job.status;
  $(".details", card).textContent = describe(job);
  const moderation = $(".moderation", card);
  const standing = MODERATION_LABELS[job.moderation?.state];
  moderation.hidden = !standing;
  moderation.textContent = standing || "";
  if (!job.video_url) $("video", card)?.remove(); // held or taken down after it played
  if (job.status === "succeeded" && job.video_url && !$("video", card)) {
    const video = document.createElement("video");
    video.controls = true;
    video.muted = true;
    video.loop = true;
    video.preload = "metadata";
    if (job.poster_url) video.poster = job.poster_url;
    video.src = job.video_url; // a signed URL of our own storage: no header needed
    video.setAttribute("aria-label", `Video for: ${job.prompt}`);
    $(".player", card).append(video);
  }
  const error = $(".error", card);
  error.hidden = job.status !== "failed";
  error.textContent = job.status === "failed" ? `${job.error_code}: ${job.error_detail || ""}` : "";
  $(".promote", card).hidden = !(job.model === "seedance-2-mini" && job.status === "succeeded");
}

// what a card says of its moderation (nothing while it is clear)
const MODERATION_LABELS = {
  unchecked: "Waiting for a content check before it is sent.",
  held: "In review: the video is shown once a moderator has looked at it.",
  blocked: "Blocked by the content policy.",
  taken_down: "Taken down under the content policy.",
};

// a report goes to the service's review queue (any signed-in user may report any video)
async function report(jobId) {
  clearProblem();
  const reason = window.prompt("Why? sexual, violence, hate, harassment, self_harm, illegal, spam or other", "other");
  if (!reason) return;
  try {
    await api("POST", `../jobs/${jobId}/reports`, { reason: reason.trim() });
    $("#live").textContent = "Thanks: the report was sent for review.";
  } catch (error) {
    showProblem(error);
  }
}

// "queued · #3 in line, about 40 s": the job's place as the service last read the queue
function queued(position, estimatedStartAt) {
  if (position === null || position === undefined) return "queued";
  const start = estimatedStartAt ? Date.parse(estimatedStartAt) : NaN;
  const wait = Number.isNaN(start) ? "" : `, about ${Math.max(0, Math.round((start - Date.now()) / 1000))} s`;
  return `queued · #${position + 1} in line${wait}`;
}

async function remove(jobId) {
  clearProblem();
  try {
    await api("DELETE", `../jobs/${jobId}`);
    state.deleted.add(jobId);
    state.cards.get(jobId)?.remove();
    state.cards.delete(jobId);
  } catch (error) {
    showProblem(error);
  }
}

async function promote(event, jobId) {
  event.preventDefault();
  clearProblem();
  const form = event.currentTarget;
  const button = $("button", form);
  button.disabled = true;
  try {
    const body = {
      duration: Number(form.elements.duration.value),
      resolution: form.elements.resolution.value,
    };
    const key = `promote-${jobId}-${body.duration}-${body.resolution}`;
    render(await api("POST", `../jobs/${jobId}/promote`, body, { "Idempotency-Key": key }));
  } catch (error) {
    showProblem(error);
  } finally {
    button.disabled = false;
  }
}

// ---- images: uploaded as picked, shown as the service stored them ---------------------------

// XMLHttpRequest, not fetch: only it reports an upload's progress
function upload(file) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append("file", file, file.name || "pasted-image");
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "../uploads");
    xhr.setRequestHeader("Authorization", `Bearer ${state.token}`);
    const bar = $("#upload-progress");
    bar.hidden = false;
    bar.value = 0;
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) bar.value = Math.round((100 * event.loaded) / event.total);
    };
    xhr.onload = () => {
      const data = JSON.parse(xhr.responseText || "null");
      const response = new Response(null, { status: xhr.status });
      if (xhr.status === 201) {
        bar.value = 100;
        resolve(data);
      } else reject(new ApiProblem(response, data));
    };
    xhr.onerror = () => reject(new TypeError("the upload failed: network error"));
    xhr.send(form);
  });
}

async function addImages(files) {
  clearProblem();
  for (const file of files) {
    try {
      state.images.push(await upload(file));
      showImages();
    } catch (error) {
      showProblem(error);
      return;
    }
  }
}

function showImages() {
  const list = $("#image-list");
  list.replaceChildren(
    ...state.images.map((image, index) => {
      const item = $("#thumb").content.firstElementChild.cloneNode(true);
      const img = $("img", item);
      img.src = image.url; // the sanitized copy, by its signed URL
      img.alt = `Image ${index + 1} (${image.width}x${image.height})`;
      const button = $(".remove-image", item);
      button.setAttribute("aria-label", `Remove image ${index + 1}`);
      button.addEventListener("click", () => {
        state.images.splice(index, 1);
        showImages();
      });
      return item;
    }),
  );
}

function wireImagePicker() {
  const drop = $("#image-drop");
  $("#image-file").addEventListener("change", (event) => {
    addImages([...event.target.files]);
    event.target.value = "";
  });
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    addImages([...event.dataTransfer.files]);
  });
  document.addEventListener("paste", (event) => {
    const files = [...(event.clipboardData?.files || [])].filter((f) => f.type.startsWith("image/"));
    if (files.length) {
      event.preventDefault();
      addImages(files);
    }
  });
}

// ---- creating variants ----------------------------------------------------------------------

async function generate(event) {
  event.preventDefault();
  clearProblem();
  const prompts = $("#prompts").value.split("\n").map((line) => line.trim()).filter(Boolean);
  const base = {
    duration: Number($("#duration").value),
    resolution: $("#resolution").value,
    aspect_ratio: $("#aspect_ratio").value,
  };
  if (state.images.length) base.images = state.images.map((image) => image.reference);
  const button = $("#generate");
  button.disabled = true;
  try {
    const key = crypto.randomUUID(); // a double submit or a retry is the same request
    if (prompts.length <= 1) {
      const body = prompts.length ? { ...base, prompt: prompts[0] } : base;
      render(await api("POST", "../jobs", body, { "Idempotency-Key": key }));
    } else {
      const batch = await api("POST", "../jobs/batch", { base, prompts }, { "Idempotency-Key": key });
      batch.jobs.forEach(render);
    }
  } catch (error) {
    showProblem(error);
  } finally {
    button.disabled = false;
  }
}

// ---- live updates: one SSE stream of all my jobs, read with fetch() (EventSource
// cannot send an Authorization header) -------------------------------------------------------

function parseEvent(block) {
  const event = { data: "" };
  for (const line of block.split(/\r?\n/)) {
    if (!line || line.startsWith(":")) continue; // heartbeat comments
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (name === "data") event.data += value;
    else event[name] = value;
  }
  return event;
}

async function refreshOpenCards() {
  for (const [id, card] of state.cards) {
    if (!TERMINAL.has(card.dataset.status)) render(await api("GET", `../jobs/${id}`));
  }
}

async function follow() {
  state.stream?.abort();
  const controller = new AbortController();
  state.stream = controller;
  while (state.token && !controller.signal.aborted) {
    try {
      const headers = { Authorization: `Bearer ${state.token}`, Accept: "text/event-stream" };
      if (state.lastEventId) headers["Last-Event-ID"] = state.lastEventId;
      const response = await fetch("../events", { headers, signal: controller.signal });
      if (!response.ok) throw new ApiProblem(response, await response.json().catch(() => null));
      $("#live").textContent = "Live updates on.";
      await refreshOpenCards(); // anything that moved while we were not listening
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
          const event = parseEvent(buffer.slice(0, end));
          buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
          if (event.id) state.lastEventId = event.id;
          if ((event.event === "job" || event.event === "moderation") && event.data) {
            const move = JSON.parse(event.data);
            if (state.cards.has(move.job_id)) render(move.job);
          } else if (event.event === "credits" && event.data) {
            showBalance(JSON.parse(event.data));
          } else if (event.event === "queue" && event.data) {
            const spot = JSON.parse(event.data);
            const card = state.cards.get(spot.job_id);
            if (card?.dataset.status === "queued") {
              $(".status", card).textContent = queued(spot.queue_position, spot.estimated_start_at);
            }
          }
        }
      }
    } catch (error) {
      if (controller.signal.aborted) return;
      if (error instanceof ApiProblem && error.status === 401) {
        $("#live").textContent = "Live updates stopped: the token was refused.";
        showProblem(error);
        return;
      }
    }
    $("#live").textContent = "Live updates interrupted; reconnecting…";
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

// ---- wiring ---------------------------------------------------------------------------------

function init() {
  const duration = $("#duration");
  for (let seconds = 4; seconds <= 15; seconds += 1) {
    duration.append(new Option(String(seconds), String(seconds), seconds === 8, seconds === 8));
  }
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    useToken($("#token").value);
  });
  $("#dev-token").addEventListener("click", () => getDevToken().catch(showProblem));
  $("#create-form").addEventListener("submit", generate);
  wireImagePicker();
  if (state.token) {
    $("#token").value = state.token;
    useToken(state.token);
  }
}

init();
