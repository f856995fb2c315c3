"""bench/deploy.py's reading of Pulumi's event log (phases and per-resource step times), and
bench/make_loop.py's of a make command's output (phases)."""

import sys

from testkit import ROOT

sys.path.insert(0, str(ROOT / "bench"))
from deploy import Timed
from make_loop import DOWN_PHASES, UP_PHASES, TimedMake

STACK = "urn:pulumi:local::p::pulumi:pulumi:Stack::p-local"
DEPLOYMENT = "urn:pulumi:local::p::consul-microservices:index:Microservice$kubernetes:apps/v1:Deployment::greeter-deployment"  # noqa: E501
SERVICE = "urn:pulumi:local::p::kubernetes:core/v1:Service::greeter-service"


def pre(urn):
    return {"resourcePreEvent": {"metadata": {"urn": urn, "op": "create"}}}


def out(urn):
    return {"resOutputsEvent": {"metadata": {"urn": urn, "op": "create"}}}


def test_phases_and_the_slowest_resources_first():
    events = [
        (1.0, {"preludeEvent": {}}),
        (1.5, pre(STACK)),
        (2.25, pre(SERVICE)),
        (2.5, pre(DEPLOYMENT)),
        (2.75, out(SERVICE)),
        (6.5, out(DEPLOYMENT)),
        (6.75, out(STACK)),
        (7.0, {"summaryEvent": {}}),
    ]
    breakdown = Timed(seconds=7.5, events=events).breakdown()
    assert breakdown["to_first_step_s"] == 1.5
    assert breakdown["program_startup_s"] == 0.75
    assert breakdown["last_event_to_exit_s"] == 0.5
    assert list(breakdown["resources"].items()) == [
        ("Stack p-local", 5.25),
        ("Deployment greeter-deployment", 4.0),
        ("Service greeter-service", 0.5),
    ]


def test_a_destroy_has_no_program_startup():
    events = [(0.5, pre(SERVICE)), (1.0, out(SERVICE)), (1.25, pre(STACK)), (1.5, out(STACK))]
    breakdown = Timed(seconds=2.0, events=events).breakdown()
    assert breakdown["to_first_step_s"] == 0.5
    assert "program_startup_s" not in breakdown
    assert breakdown["timeline"]["Service greeter-service"] == [0.5, 1.0]


def test_a_step_without_its_outputs_is_left_out():
    events = [(0.5, pre(STACK)), (1.0, pre(SERVICE))]
    assert Timed(seconds=2.0, events=events).breakdown()["resources"] == {}


def test_a_make_commands_phases_end_at_the_lines_that_mark_them():
    """bench/make_loop.py: each phase from the previous one's end to its own marking line (the
    last local-stack line ends the images), the outputs until make exits."""
    lines = [
        (0.25, "make up: cluster local, stack local"),
        (0.5, "hack/cluster.sh up"),
        (1.0, "KIND_CLUSTER=a hack/local-stack.sh prepare local >/dev/null && \\"),
        (1.5, "[local-stack 12:00:01] localhost:5001/x/books-api:abc is in the registry"),
        (2.0, "[local-stack 12:00:02] image localhost:5001/x/postgres@sha256:0"),
        (2.75, "Updating (local):"),
        (5.5, "Duration: 3s"),
    ]
    assert TimedMake(6.0, lines).phases(UP_PHASES) == {
        "preflight_s": 0.25,
        "cluster_and_engine_s": 0.75,
        "images_s": 1.0,
        "stack_checks_and_cli_start_s": 0.75,
        "update_s": 2.75,
        "outputs_s": 0.5,
    }


def test_a_phase_missing_from_the_output_gives_its_time_to_the_next():
    lines = [(0.5, "make down: cluster local, stack local"), (9.0, "Duration: 8s")]
    assert TimedMake(12.0, lines).phases(DOWN_PHASES) == {
        "preflight_s": 0.5,
        "destroy_s": 8.5,
        "cluster_down_s": 3.0,
    }
