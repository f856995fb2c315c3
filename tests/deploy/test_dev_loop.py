"""hack/dev.py's choice of the smallest update for a burst of saves (the e2e runs the loop itself:
tests/e2e/test_pulumi_sequence.py)."""

import sys

import pytest
from testkit import ROOT

sys.path.insert(0, str(ROOT / "hack"))
from dev import classify, services_of

SERVICES = services_of(ROOT)


def change(*paths: str):
    return classify({str(ROOT / p) for p in paths}, ROOT, SERVICES)


def test_the_catalog_is_the_folders_with_a_manifest():
    assert {"books-api", "greeter"} <= SERVICES


def test_a_save_in_a_service_rolls_out_that_service_only():
    found = change("services/greeter/src/greeter/server.py")
    assert (found.services, found.full) == ({"greeter"}, False)


def test_a_burst_over_two_services_rolls_out_both_once():
    found = change(
        "services/greeter/src/greeter/server.py",
        "services/greeter/requirements.txt",
        "services/books-api/src/books_api/app.py",
    )
    assert (found.services, found.full) == ({"greeter", "books-api"}, False)


@pytest.mark.parametrize(
    "shared", ["services/common/src/service_common/consul_registration.py", "services/Dockerfile"]
)
def test_code_the_services_share_rolls_out_every_service(shared):
    assert change(shared).services == SERVICES


@pytest.mark.parametrize("path", ["infra/workloads.py", "policy/pods.py", "Pulumi.dev.yaml"])
def test_the_program_its_policies_or_a_stack_file_make_a_full_update(path):
    assert change(path, "services/greeter/src/greeter/server.py").full


@pytest.mark.parametrize(
    "path", ["services/.offline/ca.pem", "services/greeter/src/greeter/generated/example_pb2.py"]
)
def test_build_and_generated_files_are_no_change(path):
    assert change(path) is None
