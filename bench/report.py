"""What every benchmark script records beside its figures, and how it writes them."""

import json
import subprocess
from pathlib import Path


def uptime() -> str:
    """The machine's load when a run starts and ends: figures of a busy machine are not figures."""
    return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()  # noqa: S607


def write(out: Path, results: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {out}")
