"""Process logging: JSON lines in production, readable text in dev, every line with the
request id of the request it belongs to (asgi-correlation-id's context variable). A record
is one line in either format: JSON escapes, and the text format escapes every control
character of a message, so a logged value (a subject, a path) cannot forge a line."""

import logging
import re

from asgi_correlation_id import CorrelationIdFilter
from pythonjsonlogger.orjson import OrjsonFormatter

from app.config import LogFormat, Settings

_HANDLER_NAME = "seedance-bff"
# Loggers whose INFO lines would carry URLs with callback signatures or task ids.
_QUIET = ("httpx", "httpcore", "uvicorn.access")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escaped(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode()


class OneLineFormatter(logging.Formatter):
    """The message escaped (`\\n`, `\\x00`, ...); a traceback still follows on its own lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return _CONTROL.sub(_escaped, super().formatMessage(record))


def configure_logging(settings: Settings) -> None:
    """Install (or replace) the service's root handler; safe to call more than once."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler()
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(CorrelationIdFilter(default_value="-"))
    if settings.effective_log_format is LogFormat.JSON:
        handler.setFormatter(
            OrjsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(correlation_id)s",
                rename_fields={
                    "asctime": "time",
                    "levelname": "level",
                    "correlation_id": "request_id",
                },
            )
        )
    else:
        handler.setFormatter(
            OneLineFormatter(
                "%(asctime)s %(levelname)-7s [%(correlation_id)s] %(name)s: %(message)s"
            )
        )
    root.addHandler(handler)
    # No line prints the thread or process: skip looking them up for every record.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root.setLevel(settings.log_level.upper())
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
