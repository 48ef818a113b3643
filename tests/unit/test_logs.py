"""Production logs are JSON lines with the request id; dev logs are readable text."""

import io
import json
import logging

from app.config import Settings
from app.ops.logs import configure_logging


def emit(settings: Settings) -> str:
    configure_logging(settings)
    handler = next(h for h in logging.getLogger().handlers if h.get_name() == "seedance-bff")
    stream = io.StringIO()
    handler.setStream(stream)  # type: ignore[attr-defined]
    logging.getLogger("app.test").info("job %s submitted", "j-1")
    return stream.getvalue()


def test_json_lines_in_production_format() -> None:
    line = emit(Settings(_env_file=None, log_format="json"))  # type: ignore[call-arg]
    record = json.loads(line)
    assert record["message"] == "job j-1 submitted"
    assert record["level"] == "INFO"
    assert record["name"] == "app.test"
    assert record["request_id"] == "-"  # outside a request
    assert "time" in record


def test_text_in_dev_and_only_one_handler_however_often_configured() -> None:
    emit(Settings(_env_file=None))  # type: ignore[call-arg]
    line = emit(Settings(_env_file=None))  # type: ignore[call-arg]
    assert line.rstrip().endswith("[-] app.test: job j-1 submitted")
    names = [h.get_name() for h in logging.getLogger().handlers]
    assert names.count("seedance-bff") == 1


def test_a_logged_value_cannot_forge_a_line() -> None:
    configure_logging(Settings(_env_file=None))  # type: ignore[call-arg]
    handler = next(h for h in logging.getLogger().handlers if h.get_name() == "seedance-bff")
    stream = io.StringIO()
    handler.setStream(stream)  # type: ignore[attr-defined]
    forged = "alice\n2026-12-05 00:00:00 INFO [-] app.requests: GET /admin 200 user=ops"
    logging.getLogger("app.test").info("user=%s \x00\u2028 done", forged)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert "user=alice\\n2026-12-05" in lines[0] and "\\x00\\u2028 done" in lines[0]
