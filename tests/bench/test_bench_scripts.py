"""The benchmark scripts load and parse their options (they run only under `make bench*`)."""

import subprocess
import sys

import pytest
from testkit import ROOT


@pytest.mark.parametrize(
    "script", ["bench/services.py", "bench/infra.py", "bench/node.py", "bench/deploy.py"]
)
def test_benchmark_script_imports_and_shows_its_options(script):
    shown = subprocess.run(
        [sys.executable, str(ROOT / script), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "--out" in shown.stdout
