"""Hostile result files: judged by their headers before anything is decoded, and checked in
a child process that is bounded and killed for real (issue 27, item 1)."""

from pathlib import Path

from tests.harness import Stack, running_stack, wait_until
from tests.hostile_media import oversized_h264, png_in_mov

LIVE = {"dispatcher_enabled": True, "reconciler_enabled": True}


async def failed_job(stack: Stack, **body: object) -> dict[str, object]:
    created = await stack.create_job(**body)

    async def ended() -> bool:
        return any(str(j.id) == created["id"] and j.status == "failed" for j in await stack.jobs())

    await wait_until(ended, within=30)
    response = await stack.http.get(f"/jobs/{created['id']}", headers=stack.headers())
    job: dict[str, object] = response.json()
    return job


def probes_running() -> list[str]:
    """Command lines of probe processes still alive on this machine."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"app.media.probe" in argv:
            found.append(b" ".join(argv).decode(errors="replace"))
    return found


async def test_a_result_no_browser_plays_is_refused_before_decoding(
    database_url: str, tmp_path: Path
) -> None:
    """A MOV holding a PNG frame was stored as `succeeded`, `video/mp4`, codec png."""
    hostile = png_in_mov(tmp_path / "png.mov")
    async with running_stack(
        database_url, sim_config={"result_file": str(hostile)}, **LIVE
    ) as stack:
        job = await failed_job(stack)
    assert job["error_code"] == "media_invalid"
    assert "png" in str(job["error_detail"]) and job["video_url"] is None


async def test_a_result_far_larger_than_asked_is_refused_before_decoding(
    database_url: str, tmp_path: Path
) -> None:
    """2400x1800 for a 480p job: what its header promises is refused, not decoded."""
    hostile = oversized_h264(tmp_path / "large.mp4")
    async with running_stack(
        database_url, sim_config={"result_file": str(hostile)}, **LIVE
    ) as stack:
        job = await failed_job(stack, resolution="480p")
    assert job["error_code"] == "media_invalid"
    assert "2400x1800" in str(job["error_detail"])


async def test_a_probe_past_its_deadline_is_killed_and_the_result_refused(
    database_url: str,
) -> None:
    """The deadline ends the probe's process, not only the wait for it: nothing of it
    goes on decoding after the job failed."""
    async with running_stack(database_url, media_probe_seconds=0.001, **LIVE) as stack:
        job = await failed_job(stack)
        assert probes_running() == []
    assert job["error_code"] == "media_invalid"
    assert "took longer than" in str(job["error_detail"])
