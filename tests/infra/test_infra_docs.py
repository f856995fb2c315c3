"""The README's configuration table is what users read: it must say what Pulumi.yaml says."""

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| `(?P<key>[A-Za-z0-9]+)` \| (?P<type>[a-z ]+) \| `(?P<default>[^`]*)` \|")


def _readme_rows() -> dict[str, tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Configuration reference", 1)[1]
    return {
        m["key"]: (m["type"], m["default"])
        for m in map(ROW.match, section.splitlines())
        if m is not None
    }


def _declared() -> dict[str, tuple[str, str]]:
    declared = {}
    for key, spec in yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"].items():
        kind = spec["type"]
        if kind == "array":
            kind += " of " + spec["items"]["type"]
        default = spec["default"]
        if isinstance(default, bool | list | dict | str):
            default = json.dumps(default)  # true, [], {}, "" as the table writes them
        declared[key.split(":", 1)[1]] = (kind, str(default).strip('"') or '""')
    return declared


def test_readme_config_table_lists_every_declared_key_with_its_type_and_default():
    assert _readme_rows() == _declared()
