"""What a webhook says: `{type, timestamp, data}`, the envelope Standard Webhooks
recommend, with the job as `JobOut` shows it when the message is written.

`data.sequence` is the `job_events` id of the move (per job, increasing): receivers order
by it and ignore a move older than one they have. `job.deleted` has no move and no sequence.
"""

import uuid
from datetime import datetime
from typing import Any

import orjson

from app.db.models import Batch, Job
from app.jobs.schemas import BatchOut, JobOut
from app.media.links import MediaLinks


def envelope(event_type: str, at: datetime, data: dict[str, Any]) -> str:
    return orjson.dumps({"type": event_type, "timestamp": at, "data": data}).decode()


def job_out(links: MediaLinks, job: Job, *, include_prompt: bool) -> JobOut:
    out = links.job_out(job)
    if not include_prompt:
        out.prompt = None
    return out


def job_data(out: JobOut, owner: str, sequence: int | None) -> dict[str, Any]:
    return {"sequence": sequence, "owner": owner, "job": out.model_dump(mode="json")}


def batch_data(batch: Batch, jobs: list[JobOut], sequence: int) -> dict[str, Any]:
    out = BatchOut.of(batch, jobs)
    return {"sequence": sequence, "owner": batch.owner, "batch": out.model_dump(mode="json")}


def test_event_data(endpoint_id: uuid.UUID) -> dict[str, Any]:
    return {"endpoint_id": str(endpoint_id), "message": "a test event, sent by an admin"}


def without_user_text(payload: str, job_id: uuid.UUID) -> str:
    """`payload` without the prompt of job `job_id`, nor its error detail (upstream's
    words may quote the prompt), wherever the job appears in it."""
    message = orjson.loads(payload)
    data = message["data"]
    jobs = [data["job"]] if "job" in data else data.get("batch", {}).get("jobs", [])
    for job in jobs:
        if job["id"] == str(job_id):
            job["prompt"] = job["error_detail"] = None
    return orjson.dumps(message).decode()
