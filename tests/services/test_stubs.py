"""The stubs in the tree are what protoc makes of the proto today; both services share one proto."""

import importlib.util

import pytest
from services_support import SERVICES

spec = importlib.util.spec_from_file_location("generate_stubs", SERVICES / "generate_stubs.py")
generate_stubs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(generate_stubs)


@pytest.mark.parametrize("name", generate_stubs.SHARED)
def test_books_api_carries_the_greeters_shared_files_unchanged(name):
    copy, source = SERVICES / "books-api" / name, SERVICES / "greeter" / name
    assert copy.read_bytes() == source.read_bytes(), "run `make stubs` to sync it"


@pytest.mark.parametrize("service_dir", generate_stubs.SERVICE_DIRS, ids=lambda p: p.name)
def test_stubs_match_a_fresh_generation(service_dir, tmp_path):
    generate_stubs.generate(service_dir, tmp_path)
    for name in generate_stubs.GENERATED:
        fresh = (tmp_path / name).read_text()
        assert (service_dir / "src" / name).read_text() == fresh, (
            f"{name} is stale: run `make stubs`"
        )
        assert "DO NOT EDIT" in fresh
