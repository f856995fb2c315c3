"""One JSON object per log line on stdout (python-json-logger), the same fields in both services."""

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
RENAME_FIELDS = {"asctime": "time", "levelname": "level", "name": "logger"}


def formatter() -> JsonFormatter:
    return JsonFormatter(FORMAT, rename_fields=RENAME_FIELDS)


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
