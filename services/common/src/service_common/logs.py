"""One JSON object per log line on stdout (python-json-logger), the same fields in every service:
the app's and, for an HTTP service under gunicorn, gunicorn's own and its access log. A line logged
while a traced request is served carries its `trace_id` and `span_id` (service_common.tracing), as
a trace backend spells them (32 and 16 hex digits), so the two find each other."""

import logging
import sys
from collections.abc import Mapping

import pythonjsonlogger.json
from opentelemetry import trace

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
RENAME_FIELDS = {"asctime": "time", "levelname": "level", "name": "logger"}


class JsonFormatter(pythonjsonlogger.json.JsonFormatter):
    """python-json-logger's, plus the ids of the current span."""

    def add_fields(self, log_data, record, message_dict) -> None:
        super().add_fields(log_data, record, message_dict)
        # The span current in the thread that logs: the formatter runs in it (StreamHandler).
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            log_data["trace_id"] = trace.format_trace_id(context.trace_id)
            log_data["span_id"] = trace.format_span_id(context.span_id)


def formatter() -> JsonFormatter:
    return JsonFormatter(FORMAT, rename_fields=RENAME_FIELDS)


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)


# gunicorn access-log atoms worth a field of their own, and the field names they get.
ACCESS_FIELDS = {
    "h": "remote",
    "m": "method",
    "U": "path",
    "q": "query",
    "s": "status",
    "B": "bytes",
    "L": "duration_s",
    "a": "user_agent",
}


class AccessJsonFormatter(JsonFormatter):
    """gunicorn passes its access-log atoms as the record's args: lift the useful ones to fields."""

    def add_fields(self, log_data, record, message_dict) -> None:
        super().add_fields(log_data, record, message_dict)
        if isinstance(record.args, Mapping):
            log_data.update({name: record.args[atom] for atom, name in ACCESS_FIELDS.items()})


def gunicorn_logconfig(level: str) -> dict:
    """For gunicorn's `logconfig_dict`: gunicorn's loggers, the app's and the root print JSON."""
    formatter = {"format": FORMAT, "rename_fields": RENAME_FIELDS}
    handler = {"class": "logging.StreamHandler", "stream": "ext://sys.stdout"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": JsonFormatter, **formatter},
            "access": {"()": AccessJsonFormatter, **formatter},
        },
        "handlers": {
            "default": {**handler, "formatter": "json"},
            "access": {**handler, "formatter": "access"},
        },
        "root": {"level": level, "handlers": ["default"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["default"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
        },
    }
