"""Hostile result files: judged by their headers before anything is decoded, and checked in
a child process that is bounded and killed for real (issue 27, item 1)."""

from collections.abc import Callable
from pathlib import Path

import pytest

from testkit.harness import LIVE, Stack, running_stack, wait_until
from testkit.processes import children_of
from tests.hostile_media import oversized_h264, png_in_mov


async def failed_job(stack: Stack, **body: object) -> dict[str, object]:
    created = await stack.create_job(**body)

    async def ended() -> bool:
        return any(str(j.id) == created["id"] and j.status == "failed" for j in await stack.jobs())

    await wait_until(ended, within=30)
    response = await stack.http.get(f"/jobs/{created['id']}", headers=stack.headers())
    job: dict[str, object] = response.json()
    return job


@pytest.mark.parametrize(
    ("make", "body", "said"),
    [
        # stored as `succeeded`, `video/mp4`, codec png, before: no browser plays it
        (png_in_mov, {}, "png"),
        # 2400x1800 for a 480p job: what its header promises is refused, not decoded
        (oversized_h264, {"resolution": "480p"}, "2400x1800"),
    ],
)
async def test_a_result_is_judged_by_its_headers_before_anything_is_decoded(
    database_url: str,
    tmp_path: Path,
    make: Callable[[Path], Path],
    body: dict[str, object],
    said: str,
) -> None:
    hostile = make(tmp_path / "hostile")
    async with running_stack(
        database_url, sim_config={"result_file": str(hostile)}, **LIVE
    ) as stack:
        job = await failed_job(stack, **body)
    assert (job["error_code"], job["video_url"]) == ("media_invalid", None)
    assert said in str(job["error_detail"])


async def test_a_probe_past_its_deadline_is_killed_and_the_result_refused(
    database_url: str,
) -> None:
    """The deadline ends the probe's process, not only the wait for it: nothing of it
    goes on decoding after the job failed."""
    async with running_stack(database_url, media_probe_seconds=0.001, **LIVE) as stack:
        job = await failed_job(stack)
        zygote = stack.app.state.services.children.zygote_pid
        assert zygote is not None and children_of(zygote) == []
    assert job["error_code"] == "media_invalid"
    assert "took longer than" in str(job["error_detail"])
