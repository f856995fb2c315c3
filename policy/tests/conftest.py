"""The pack's tests run in its own environment (policy/.venv, `make policy-venv`; `make test` runs
them there), next to the program's modules and the mock harness of tests/infra."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT / "policy", ROOT / "tests" / "infra"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
