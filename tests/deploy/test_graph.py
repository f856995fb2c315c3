"""`make graph` (hack/graph.py): the README's picture is drawn from the manifests and a stack's
settings, so it stays current, and a service folder added is drawn with its calls and flows while
nothing else in the picture changes.

Each test reads the picture as a reader's tools would (XML), by what it names: the boxes' ids and
text, and each arrow's kind and ends. The expected flows are the ones the program opens for a
manifest (infra/workloads.py, infra/database.py), derived here from the manifests.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from testkit import ROOT, copy_service

sys.path.insert(0, str(ROOT / "hack"))
import graph  # hack/graph.py, with the program's catalog and config it imports

catalog = graph.catalog
SCRIPT = ROOT / "hack" / "graph.py"
PICTURE = ROOT / "docs" / "architecture.svg"
SVG = "{http://www.w3.org/2000/svg}"
DEV = graph.stack_settings(ROOT / "Pulumi.dev.yaml", catalog.load())
NEW = "made-by-a-test"  # a name no user picks, so it clashes with no folder of the repo's


def make_graph(*args: str) -> subprocess.CompletedProcess:
    """hack/graph.py as `make graph` runs it, in the dev venv."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


def parsed(svg: str) -> ET.Element:
    """The picture as XML; raises on a picture that is not well-formed."""
    return ET.fromstring(svg)  # noqa: S314 - the picture this repo draws, not untrusted input


def drawn(path: Path) -> ET.Element:
    return parsed(path.read_text())


def drawn_from(services: Path, out: Path) -> ET.Element:
    """`make graph` with the services of `services`."""
    done = make_graph("--services", str(services), "--out", str(out))
    assert done.returncode == 0, done.stderr
    return drawn(out)


def boxes(picture: ET.Element) -> dict[str, str]:
    """Each box's id -> its text, line after line."""
    return {
        group.get("id"): "\n".join(text.text or "" for text in group.iter(f"{SVG}text"))
        for group in picture.iter(f"{SVG}g")
        if group.get("id")
    }


def flows(picture: ET.Element) -> dict[tuple[str, str, str], ET.Element]:
    """Each arrow by (kind, from, to)."""
    return {
        (group.get("data-kind"), group.get("data-from"), group.get("data-to")): group
        for group in picture.iter(f"{SVG}g")
        if group.get("class") == "flow"
    }


def opened(service: catalog.Manifest) -> set[tuple[str, str, str]]:
    """The flows the program opens for one manifest in the dev stack: its calls, clients when it
    is exposed, Consul's API and health checks, its own database, Prometheus's scrape."""
    box = f"service-{service.name}"
    found = {("register", box, "consul"), ("check", "consul", box)}
    found |= {("scrape", "prometheus", box)} if DEV.prometheus_install else set()
    found |= {("call", box, f"service-{callee}") for callee in service.calls}
    found |= {("client", "clients", box)} if service.exposed else set()
    found |= {("database", box, f"database-{service.name}")} if service.database else set()
    return found


def crossings(picture: ET.Element) -> list[str]:
    """The arrows that run through a box (through its inside: an arrow ends on a box's edge)."""
    rects = {
        group.get("id"): [
            float(group.find(f"{SVG}rect").get(k)) for k in ("x", "y", "width", "height")
        ]
        for group in picture.iter(f"{SVG}g")
        if group.get("id")
    }
    found = []
    for key, group in flows(picture).items():
        points = [
            tuple(map(float, point.split(",")))
            for point in group.find(f"{SVG}polyline").get("points").split()
        ]
        for (x1, y1), (x2, y2) in itertools.pairwise(points):
            for box, (x, y, w, h) in rects.items():
                if (
                    min(x1, x2) < x + w
                    and max(x1, x2) > x
                    and min(y1, y2) < y + h
                    and max(y1, y2) > y
                ):
                    found.append(f"{key} through {box}")
    return found


@pytest.fixture
def services(tmp_path) -> Path:
    """A copy of the repo's services/, to add to."""
    tree = tmp_path / "services"
    shutil.copytree(
        ROOT / "services", tree, symlinks=True,
        ignore=shutil.ignore_patterns(".offline", "__pycache__", ".venv"),
    )  # fmt: skip
    return tree


def test_make_graph_runs_the_script_on_the_dev_stack_into_the_readme_picture():
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "STACK")}
    dry = subprocess.run(
        ["make", "--no-print-directory", "-n", "graph"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert 'hack/graph.py --stack "dev" --out "docs/architecture.svg"' in dry.stdout
    assert "](docs/architecture.svg)" in (ROOT / "README.md").read_text()


def test_the_readme_picture_is_current(tmp_path):
    fresh = tmp_path / "architecture.svg"
    done = make_graph("--stack", "dev", "--out", str(fresh))
    assert done.returncode == 0, done.stderr
    assert fresh.read_bytes() == PICTURE.read_bytes(), (
        "docs/architecture.svg is not what the manifests and Pulumi.dev.yaml draw now: "
        "run `make graph`"
    )


def test_the_picture_is_well_formed_and_names_every_service_and_flow():
    picture = drawn(PICTURE)  # raises on XML that is not well-formed
    assert picture.tag == f"{SVG}svg"
    services = catalog.load()
    stack = graph.stack_settings(ROOT / "Pulumi.dev.yaml", services)
    shown = boxes(picture)
    for service in services:
        text = shown[f"service-{service.name}"]
        port = stack.service(service).port
        for word in (service.name, service.protocol, f":{port}", service.consul_name):
            assert word in text, f"{service.name}'s box lacks {word!r}: {text!r}"
    assert set(flows(picture)) == set().union(*map(opened, services))
    assert crossings(picture) == []


def test_a_third_service_is_drawn_with_its_calls_and_flows_and_nothing_else_changes(
    services, tmp_path
):
    """Its folder alone, a copy of the service with the most to draw (calls, clients, a
    database), as a user starts one."""
    before = drawn_from(services, tmp_path / "before.svg")
    source = max(catalog.load(services), key=lambda s: (len(s.calls), s.exposed, bool(s.database)))
    copy_service(services, source.name, NEW)
    after = drawn_from(services, tmp_path / "after.svg")
    new = catalog.load(services).services[NEW]
    assert new.calls, f"{source.name} calls nothing: the test needs a service that does"

    added = {f"service-{NEW}"} | ({f"database-{NEW}"} if new.database else set())
    assert set(boxes(after)) - set(boxes(before)) == added
    for word in (NEW, new.protocol, f":{new.port}", new.consul_name):
        assert word in boxes(after)[f"service-{NEW}"]
    assert set(flows(after)) - set(flows(before)) == opened(new)
    # Nothing else changes: every other box says what it said, every other arrow is still there.
    assert {box: text for box, text in boxes(after).items() if box not in added} == boxes(before)
    assert set(flows(before)) <= set(flows(after))
    assert crossings(after) == []


def test_a_cycle_of_calls_is_drawn_without_an_arrow_through_a_box(services):
    """The catalog allows one (a callee calling its caller back): the call back turns around."""
    caller = next(service for service in catalog.load(services) if service.calls)
    manifest = services / caller.calls[0] / "service.yaml"
    declared = yaml.safe_load(manifest.read_text())
    manifest.write_text(
        yaml.safe_dump({**declared, "calls": [*declared.get("calls", []), caller.name]})
    )
    cyclic = catalog.load(services)
    picture = parsed(
        graph.draw(cyclic, graph.stack_settings(ROOT / "Pulumi.dev.yaml", cyclic), "dev")
    )
    both = {("call", f"service-{caller.name}", f"service-{caller.calls[0]}"),
            ("call", f"service-{caller.calls[0]}", f"service-{caller.name}")}  # fmt: skip
    assert both <= set(flows(picture))
    assert crossings(picture) == []


def test_the_stack_settings_are_drawn(tmp_path):
    """An external Consul, an external database whose URL is a secret (never shown, never
    needed), a LoadBalancer: what the stack file says, not the defaults."""
    services = catalog.load()
    owner = next(service for service in services if service.database)
    exposed = next(service for service in services if service.exposed)
    ciphertext = "v1:c2VjcmV0IHRoYXQgbm8gb25lIHJlYWRz"
    settings: dict[str, dict] = {}
    settings.setdefault(owner.name, {}).update(
        databaseUrl={"secure": ciphertext}, databaseCidr="10.1.0.0/24"
    )
    settings.setdefault(exposed.name, {}).update(serviceType="LoadBalancer")
    stack_file = tmp_path / "Pulumi.elsewhere.yaml"
    stack_file.write_text(yaml.safe_dump({"config": {
        f"{graph.PROJECT}:clusterProfile": "existing",
        f"{graph.PROJECT}:consulInstall": False,
        f"{graph.PROJECT}:consulAddress": "http://10.0.0.5:8500",
        f"{graph.PROJECT}:services": settings,
        "kubernetes:context": "another project's key",
    }}))  # fmt: skip
    text = graph.draw(services, graph.stack_settings(stack_file, services), "elsewhere")
    picture = parsed(text)
    shown = boxes(picture)
    assert "external" in shown["consul"] and "10.0.0.5:8500" in shown["consul"]
    assert "external" in shown[f"database-{owner.name}"]
    assert "10.1.0.0/24" in shown[f"database-{owner.name}"]
    assert f"{owner.name}-db" not in text  # no database of its own
    client = flows(picture)["client", "clients", f"service-{exposed.name}"]
    assert "LoadBalancer" in "".join(client.itertext())
    assert "LoadBalancer" in shown[f"service-{exposed.name}"]
    for secret in (ciphertext, graph.STAND_INS["databaseUrl"], "192.0.2.1"):
        assert secret not in text


def test_prometheus_and_the_trace_collector_are_drawn_as_the_stack_sets_them(tmp_path):
    """The dev stack's Prometheus scrapes every service (read by Consul's UI: the chart's
    Consul); prod has none, an external Consul none to show it, and a collector is one line."""
    services = catalog.load()
    dev = parsed(PICTURE.read_text())
    assert "read by Consul's UI" in boxes(dev)["prometheus"]
    for service in services:
        scrape = flows(dev)["scrape", "prometheus", f"service-{service.name}"]
        assert f":{service.metrics_port}" in "".join(scrape.itertext())
    prod = graph.draw(services, graph.stack_settings(ROOT / "Pulumi.prod.yaml", services), "prod")
    assert "prometheus" not in boxes(parsed(prod)) and 'data-kind="scrape"' not in prod
    stack_file = tmp_path / "Pulumi.traced.yaml"
    stack_file.write_text(yaml.safe_dump({"config": {
        f"{graph.PROJECT}:prometheusInstall": True,
        f"{graph.PROJECT}:consulInstall": False,
        f"{graph.PROJECT}:consulAddress": "http://10.0.0.5:8500",
        f"{graph.PROJECT}:otlpEndpoint": "http://collector.example:4317",
        f"{graph.PROJECT}:otlpCidr": "10.9.0.0/16",
    }}))  # fmt: skip
    traced = parsed(graph.draw(services, graph.stack_settings(stack_file, services), "traced"))
    assert "read by Consul's UI" not in boxes(traced)["prometheus"]
    assert crossings(traced) == []
    heading = "".join(traced.itertext())
    assert "traces to http://collector.example:4317 (network 10.9.0.0/16)" in heading


@pytest.mark.parametrize("stack_file", sorted(ROOT.glob("Pulumi.*.yaml")), ids=lambda p: p.name)
def test_every_committed_stack_is_drawn(stack_file):
    """Also the example prod stack, whose deploy needs its registryPassword set first: keys the
    picture does not show do not stop it."""
    services = catalog.load()
    name = stack_file.name.removeprefix("Pulumi.").removesuffix(".yaml")
    picture = parsed(graph.draw(services, graph.stack_settings(stack_file, services), name))
    assert {f"service-{service.name}" for service in services} <= set(boxes(picture))


def test_a_stack_key_the_program_refuses_is_refused(tmp_path):
    stack_file = tmp_path / "Pulumi.typo.yaml"
    stack_file.write_text(yaml.safe_dump({"config": {f"{graph.PROJECT}:consulInstal": False}}))
    with pytest.raises(graph.config.ConfigError, match="unknown key, did you mean consulInstall"):
        graph.stack_settings(stack_file, catalog.load())


def test_an_unknown_stack_names_the_stacks_there_are(tmp_path):
    done = make_graph("--stack", "nowhere", "--out", str(tmp_path / "x.svg"))
    assert done.returncode != 0
    assert "STACK=nowhere: no Pulumi.nowhere.yaml, expected one of" in done.stderr
    assert "dev" in done.stderr
    assert not (tmp_path / "x.svg").exists()
