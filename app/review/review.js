// The review page: an admin's view of the moderation queue (GET /admin/moderation/queue),
// one case at a time (its video plays by an admin-signed URL, withheld or not), and the
// decisions (POST /admin/moderation/jobs/{id}/decisions). The admin token stays in memory.
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const state = { token: null, jobId: null, owner: null };

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(`..${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const answer = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) throw new Error(answer?.detail || `HTTP ${response.status}`);
  return answer;
}

function say(text) {
  $("#status").textContent = text;
}

function reasons(item) {
  const why = [];
  if (item.held) why.push("held");
  if (item.reports) why.push(`${item.reports} report(s)`);
  if (item.appealed) why.push("appealed");
  if (item.escalated) why.push("escalated");
  return `${item.subject} · ${why.join(", ")}`;
}

async function loadQueue() {
  const page = await api("GET", "/admin/moderation/queue?state=open&limit=50");
  const list = $("#queue");
  list.replaceChildren();
  for (const item of page.items) {
    const entry = $("#case-item").content.firstElementChild.cloneNode(true);
    $(".open", entry).textContent = `Job ${item.job_id}`;
    $(".open", entry).addEventListener("click", () => openCase(item.job_id));
    $(".why", entry).textContent = reasons(item);
    list.append(entry);
  }
  say(page.items.length ? `${page.items.length} open case(s).` : "Nothing waits for review.");
}

async function openCase(jobId) {
  const file = await api("GET", `/admin/moderation/jobs/${jobId}`);
  state.jobId = jobId;
  state.owner = file.job.owner;
  const section = $("#case");
  section.hidden = false;
  $("#case-title").textContent = `Job ${jobId}`;
  const moderation = file.job.moderation;
  $(".facts", section).textContent =
    `${file.job.owner} · ${file.job.status} · moderation: ${moderation.state}` +
    (moderation.categories.length ? ` (${moderation.categories.join(", ")})` : "") +
    ` · prompt: ${file.job.prompt ?? "(none)"}`;
  const player = $(".player", section);
  player.replaceChildren();
  if (file.video_url) {
    const video = document.createElement("video");
    video.controls = true;
    video.muted = true;
    video.preload = "auto";
    if (file.poster_url) video.poster = file.poster_url;
    video.src = file.video_url;
    video.setAttribute("aria-label", "The video under review");
    player.append(video);
  }
  const history = $(".history", section);
  history.replaceChildren(
    ...file.events.map((event) => {
      const line = document.createElement("li");
      const categories = Object.keys(event.categories).join(", ");
      line.textContent = `${event.at} · ${event.kind} by ${event.source}` +
        (event.actor ? ` (${event.actor})` : "") +
        (event.verdict ? ` · ${event.verdict}` : "") +
        (categories ? ` · ${categories}` : "") +
        (event.note ? ` · ${event.note}` : "");
      return line;
    }),
  );
}

async function decide(action) {
  const note = $("#note").value.trim() || null;
  const result = await api("POST", `/admin/moderation/jobs/${state.jobId}/decisions`, { action, note });
  $("#case").hidden = true;
  await loadQueue();
  say(`Job ${state.jobId}: ${action} done; it is now ${result.state}.`);
}

async function suspendOwner() {
  const reason = window.prompt(`Why suspend ${state.owner}?`);
  if (!reason) return;
  const path = `/admin/users/${encodeURIComponent(state.owner)}/suspension`;
  await api("PUT", path, { reason });
  say(`${state.owner} is suspended.`);
}

function guarded(work) {
  return (...args) => work(...args).catch((error) => say(`Refused: ${error.message}`));
}

function init() {
  $("#sign-in").addEventListener("submit", guarded(async (event) => {
    event.preventDefault();
    state.token = $("#token").value.trim();
    await loadQueue();
  }));
  for (const button of document.querySelectorAll("[data-action]")) {
    button.addEventListener("click", guarded(() => decide(button.dataset.action)));
  }
  $("#suspend").addEventListener("click", guarded(suspendOwner));
}

init();
