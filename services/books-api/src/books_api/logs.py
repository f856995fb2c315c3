"""Logging for gunicorn and the app: the shared JSON lines (service_common.logs) for gunicorn."""

from collections.abc import Mapping

from pythonjsonlogger.json import JsonFormatter
from service_common.logs import FORMAT, RENAME_FIELDS

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
