"""The stubs in the tree are what protoc makes of the one proto today; nothing is kept twice."""

import hashlib
import importlib.util

from services_support import SERVICES

spec = importlib.util.spec_from_file_location("generate_stubs", SERVICES / "generate_stubs.py")
generate_stubs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(generate_stubs)


def test_stubs_match_a_fresh_generation(tmp_path):
    generate_stubs.generate(tmp_path)
    for name in generate_stubs.GENERATED:
        fresh = (tmp_path / name).read_text()
        assert (generate_stubs.OUT_DIR / name).read_text() == fresh, (
            f"{name} is stale: run `make stubs`"
        )
        assert "DO NOT EDIT" in fresh


def test_no_file_exists_twice_in_services():
    """What both services share lives once (common/, protos/); no copy is kept in sync. A link
    (each image's name for the one Dockerfile) is the same file, not a copy."""
    seen: dict[str, str] = {}
    for path in sorted(SERVICES.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        if "__pycache__" in path.parts or ".offline" in path.parts:
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        rel = str(path.relative_to(SERVICES))
        assert digest not in seen, f"{rel} has the same content as {seen[digest]}"
        seen[digest] = rel
