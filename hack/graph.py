#!/usr/bin/env python3
"""`make graph [STACK=dev] [OUT=docs/architecture.svg]`: the deployment as the program makes it, as
SVG: each service (protocol, port, Consul name, pods), the calls between them, the flows the
NetworkPolicies allow (clients to the exposed services, Consul's health checks to every service,
each service to Consul's API and to its own database), Consul, and each database.

Why generated: a hand-drawn diagram goes stale the day a service is added. This one is drawn from
what the program deploys from: the manifests, `services/*/service.yaml`, through the program's
catalog (infra/catalog.py), and the stack's settings, `Pulumi.<stack>.yaml`, through its schema
(infra/config.py). A new service folder appears with its calls and flows and nothing else to edit,
and tests/deploy/test_graph.py fails when the README's picture differs from a fresh one.

Why pure Python and a fixed layout: nothing to install (no Graphviz), and the same bytes for the
same input, so a test can compare. Columns from left to right: the clients, the services by call
depth (a service is one column right of its deepest caller) with each database under its service,
and Consul as a band on the right. Every box has a row of its own, so an arrow runs along its own
box's row and turns only in the gaps between columns: it never crosses a box.

    hack/graph.py [--stack NAME] [--services DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "infra"))

import catalog  # noqa: E402 - the program's manifests
import config  # noqa: E402 - the program's stack schema
import consul_server  # noqa: E402 - Consul's HTTP port
import database  # noqa: E402 - the databases' port
import prometheus  # noqa: E402 - the Prometheus server's port

PROJECT = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["name"]
OUT = ROOT / "docs" / "architecture.svg"
# The keys the picture shows. The others (the cluster, the images, the pods' resources) do not
# change it and are left out, so that a stack whose deploy needs more first is still drawn (the
# example Pulumi.prod.yaml without its registryPassword); `make up` validates them. A key the
# schema does not know stays in, so that a typo is refused as the program refuses it.
PICTURED = {
    "namespace", "services", "postgresStorage", "consulInstall", "consulAddress",
    "consulExternalCidr", "consulNamespace", "consulChartVersion", "consulServerReplicas",
    "prometheusInstall", "otlpEndpoint", "otlpCidr",
}  # fmt: skip
KNOWN = {field.alias or name for name, field in config.StackConfig.model_fields.items()}
# A secret is stored encrypted ({secure: …}) and the picture needs only whether it is set: it reads
# as a value its key accepts. databaseUrl's host is a literal IP (TEST-NET-1), which needs no CIDR.
STAND_INS = {"databaseUrl": "postgresql://secret@192.0.2.1/secret"}

# Geometry, in pixels. No font metrics without a renderer: a character is taken wider than most
# sans-serif ones are, so that text fits its box wherever the picture is shown.
FONT, LABEL_FONT, TITLE_FONT = 12, 11, 15
CHAR = {FONT: 7.2, LABEL_FONT: 6.6, TITLE_FONT: 9.0}
LINE = 16  # a line of text in a box
PAD = 10  # inside a box, around its text
PORT = 18  # the least distance between two arrows on one side of a box
ROW_GAP = 30  # between rows: a database's label sits in it
GAP = 40  # the least gap between columns
LANE = 10  # between two vertical runs in one gap
DB_RUN = 20  # where the arrow to a database leaves its service, from the box's left edge
MARGIN = 20
COLOURS = {  # kind: fill, stroke
    "service": ("#e8f1fb", "#1f5c99"),
    "database": ("#fdf3e1", "#8c510a"),
    "clients": ("#eaf5ea", "#2e7d32"),
    "consul": ("#f3eefa", "#6a3d9a"),
    "prometheus": ("#fdf0eb", "#b5401e"),
}
ARROWS = {  # kind: stroke, dashes
    "call": ("#1f5c99", ""),
    "client": ("#2e7d32", ""),
    "register": ("#6a3d9a", ""),
    "check": ("#6a3d9a", "5 3"),
    "database": ("#8c510a", ""),
    "scrape": ("#b5401e", "2 3"),
}


@dataclass(eq=False)
class Box:
    """A thing drawn: a service, a database, the clients or Consul; placed by `_layout`."""

    id: str
    kind: str
    lines: list[str]
    col: int
    row: int
    dashed: bool = False  # outside the cluster
    x: int = 0
    y: int = 0
    w: int = 0
    h: int = 0

    @property
    def right(self) -> int:
        return self.x + self.w


@dataclass(eq=False)
class Arrow:
    """A flow from `source` to `target`; `title` says it in words (a reader's tooltip)."""

    kind: str
    source: Box
    target: Box
    label: str
    title: str
    points: list[tuple[int, int]] = field(default_factory=list)
    label_at: tuple[int, int] = (0, 0)

    @property
    def backward(self) -> bool:
        """A call to a service in the same column or left of it: only a cycle of calls has one."""
        return self.kind == "call" and self.target.col <= self.source.col


def _revealed(value: Any, key: str) -> Any:
    """`value` with each encrypted `{secure: …}` in it replaced by a stand-in its key accepts."""
    if isinstance(value, dict) and set(value) == {"secure"}:
        return STAND_INS.get(key, "secret")
    if isinstance(value, dict):
        return {name: _revealed(item, name) for name, item in value.items()}
    return value


def stack_settings(path: Path, services: catalog.Catalog) -> config.StackConfig:
    """The stack file's keys of this project that the picture shows, validated by the program's
    own schema as `pulumi up` validates them, without the Pulumi engine (which only a deploy
    runs)."""
    document = yaml.safe_load(path.read_text()) or {}
    raw: dict[str, Any] = {}
    secrets: set[str] = set()
    for full_key, value in (document.get("config") or {}).items():
        namespace, _, key = full_key.partition(":")
        if namespace == PROJECT and (key in PICTURED or key not in KNOWN):
            raw[key] = _revealed(value, key)
            if raw[key] != value:
                secrets.add(key)
    return config.validate(raw, secrets, PROJECT, services)


def _depths(services: catalog.Catalog) -> dict[str, int]:
    """Each service's call depth: 0 when nothing calls it, else one more than its deepest caller,
    so that calls run left to right. A cycle of calls is cut where it closes, walking the calls
    from the exposed services first, then from those nothing calls."""
    cut: set[tuple[str, str]] = set()
    walked: set[str] = set()

    def walk(name: str, chain: tuple[str, ...]) -> None:
        walked.add(name)
        for callee in services.services[name].calls:
            if callee in chain:
                cut.add((name, callee))
            elif callee not in walked:
                walk(callee, (*chain, callee))

    for service in sorted(
        services, key=lambda s: (not s.exposed, bool(services.callers_of(s.name)))
    ):
        if service.name not in walked:
            walk(service.name, (service.name,))
    depths: dict[str, int] = {}

    def depth(name: str) -> int:
        if name not in depths:
            callers = [c.name for c in services.callers_of(name) if (c.name, name) not in cut]
            depths[name] = max((depth(caller) + 1 for caller in callers), default=0)
        return depths[name]

    return {service.name: depth(service.name) for service in services}


def _consul(stack: config.StackConfig) -> tuple[list[str], int]:
    """Consul as the stack runs it, and the port of its HTTP API (consul_server.deploy's)."""
    if stack.consul_install:
        servers = stack.consul_server_replicas
        return [
            "Consul",
            f"hashicorp/consul chart {stack.consul_chart_version}",
            f"namespace {stack.consul_namespace}, {servers} server{'s' * (servers > 1)}",
        ], consul_server.HTTP_PORT
    url = stack.consul_url  # set: config's rule when consulInstall is false
    port = url.port or consul_server.HTTP_PORT
    lines = [
        "Consul, external",
        f"{url.scheme}://{url.host}:{port}",
        f"network {stack.consul_cidr}",
    ]
    return lines, port


def _exposure(settings: config.ServiceSettings) -> str:
    """How clients outside the cluster get in, besides a port-forward: the stack's serviceType."""
    return "" if settings.service_type == "ClusterIP" else f", {settings.service_type}"


def _service(
    service: catalog.Manifest, settings: config.ServiceSettings, col: int, row: int
) -> Box:
    pods = f"{settings.replicas} pods"
    if settings.max_replicas:
        pods = f"{settings.replicas} to {settings.max_replicas} pods (autoscaled)"
    lines = [
        service.name,
        f"{service.protocol} :{settings.port}{_exposure(settings)}",
        f"Consul name {service.consul_name}",
        pods,
    ]
    return Box(f"service-{service.name}", "service", lines, col, row)


def _database(service: catalog.Manifest, stack: config.StackConfig, owner: Box) -> Arrow:
    """The flow to the service's database, in the row under it: its own PostgreSQL, or the
    external one the stack names."""
    name, overrides = service.name, stack.overrides(service.name)
    if overrides.database_url:
        network = [f"network {overrides.database_cidr}"] if overrides.database_cidr else []
        lines = ["external database", f"services.{name}.databaseUrl", *network]
        to = overrides.database_cidr or "the URL's host"
        label, title = f"SQL to {to}", f"{name} may reach its external database at {to}"
    else:
        lines = [
            f"{name}-db",
            f"PostgreSQL :{database.PORT}",
            f"StatefulSet, {stack.postgres_storage} volume",
        ]
        label = f"SQL :{database.PORT}, {name} only"
        title = f"{name}-db admits {name}'s pods alone, on :{database.PORT}"
    box = Box(
        f"database-{name}",
        "database",
        lines,
        owner.col,
        owner.row + 1,
        dashed=bool(overrides.database_url),
    )
    return Arrow("database", owner, box, label, title)


def _picture(services: catalog.Catalog, stack: config.StackConfig) -> tuple[list[Box], list[Arrow]]:
    """What to draw, Consul first, with each box's column and row: the clients (if a service is
    exposed) and Consul's header in row 0, then each service, by call depth and name, with its
    database in the row under it."""
    consul_lines, consul_port = _consul(stack)
    consul = Box("consul", "consul", consul_lines, col=-1, row=0, dashed=not stack.consul_install)
    exposed = any(service.exposed for service in services)
    clients = Box("clients", "clients", ["clients", "any source"], col=0, row=0)
    boxes = [consul, *([clients] if exposed else [])]
    depths = _depths(services)
    placed: dict[str, Box] = {}
    arrows: list[Arrow] = []
    for service in sorted(services, key=lambda s: (depths[s.name], s.name)):
        name, settings = service.name, stack.service(service)
        box = _service(service, settings, depths[name] + int(exposed), boxes[-1].row + 1)
        placed[name] = box
        boxes.append(box)
        port = f"{service.protocol} :{settings.port}"
        if service.exposed:
            exposure = f"{port}{_exposure(settings)}"
            title = f"any client may connect to {name} on {exposure}"
            arrows.append(Arrow("client", clients, box, f"{name}, {exposure}", title))
        registers = f"{name} registers, discovers :{consul_port}"
        title = (
            f"{name} registers in Consul as {service.consul_name} and finds its callees there "
            f"(:{consul_port})"
        )
        arrows.append(Arrow("register", box, consul, registers, title))
        title = f"Consul's health checks reach {name} on {port}"
        arrows.append(Arrow("check", consul, box, f"health checks {name} :{settings.port}", title))
        if service.database:
            arrows.append(_database(service, stack, box))
            boxes.append(arrows[-1].target)
    for service in services:
        for callee in map(services.services.get, service.calls):
            port = f"{callee.protocol} :{stack.service(callee).port}"
            title = (
                f"{service.name} calls {callee.name} ({port}), its Consul name {callee.consul_name}"
            )
            label = f"{callee.name}, {port}"
            arrows.append(Arrow("call", placed[service.name], placed[callee.name], label, title))
    if stack.prometheus_install:
        server = Box("prometheus", "prometheus", _prometheus_lines(stack), col=-1, row=0)
        boxes.append(server)
        for service in services:
            port = f":{service.metrics_port}"
            title = f"Prometheus scrapes {service.name}'s metrics on {port}"
            arrows.append(Arrow("scrape", server, placed[service.name], f"metrics {port}", title))
    return boxes, arrows


def _prometheus_lines(stack: config.StackConfig) -> list[str]:
    """The program's Prometheus; the one flow into it is from Consul's servers, for the UI."""
    lines = ["Prometheus", f"http :{prometheus.PORT}", "a job per service"]
    return [*lines, "read by Consul's UI"] if stack.consul_ui_metrics else lines


def _text_width(text: str, size: int = FONT) -> int:
    return math.ceil(len(text) * CHAR[size])


def _sides(box: Box, arrows: list[Arrow]) -> tuple[list[Arrow], list[Arrow]]:
    """The arrows on the box's left side and on its right side, each top to bottom: on the left
    the clients' and the callers'; on the right its calls, the calls back into it, then Consul's
    two. Calls in the order of the rows they come from or go to, so that fewer cross."""

    def row(arrow: Arrow) -> int:
        return (arrow.target if arrow.source is box else arrow.source).row

    between = [a for a in arrows if a.kind in ("call", "client")]
    left = [a for a in between if a.target is box and not a.backward]
    calls = [a for a in between if a.source is box]
    back = [a for a in between if a.target is box and a.backward]
    consul = [a for a in arrows if a.kind in ("register", "check") and box in (a.source, a.target)]
    scrapes = [a for a in arrows if a.kind == "scrape" and a.target is box]
    return [*sorted(left, key=row), *scrapes], [
        *sorted(calls, key=row),
        *sorted(back, key=row),
        *consul,
    ]


def _lane_gap(arrow: Arrow) -> int:
    """The gap an arrow between columns turns in: the one before its target's column, or, for a
    call back, the one after its caller's."""
    return arrow.source.col + 1 if arrow.backward else arrow.target.col


def _layout(boxes: list[Box], arrows: list[Arrow], top: int) -> tuple[int, int]:
    """Places every box and routes every arrow; returns the width and height of the picture.
    Consul is a band on the right, Prometheus (when there is one) a band on the left; the other
    boxes are placed on the grid between them."""
    consul = boxes[0]
    bands = [box for box in boxes[1:] if box.kind == "prometheus"]
    grid = [box for box in boxes[1:] if box.kind != "prometheus"]
    columns = max(box.col for box in grid) + 1
    consul.col = columns
    sides = {box: _sides(box, arrows) for box in grid}
    between = [a for a in arrows if a.kind in ("call", "client")]
    # Columns: as wide as their widest box (and a database arrow's label); gaps: room for the
    # labels of the arrows leaving the column before, then one lane per arrow turning there.
    col_w = [0] * columns
    for box in grid:
        box.w = max(_text_width(line) for line in box.lines) + 2 * PAD
        box.h = max(2 * PAD + LINE * len(box.lines), PORT * (max(map(len, sides[box])) + 1))
        col_w[box.col] = max(col_w[box.col], box.w)
    for arrow in arrows:
        if arrow.kind == "database":
            needed = DB_RUN + 6 + _text_width(arrow.label, LABEL_FONT)
            col_w[arrow.source.col] = max(col_w[arrow.source.col], needed)
    lanes: dict[int, list[Arrow]] = {gap: [] for gap in range(columns + 1)}
    for arrow in sorted(between, key=lambda a: (a.source.row, a.target.row)):
        lanes[_lane_gap(arrow)].append(arrow)
    gap_w = [0]
    scrapes = [_text_width(a.label, LABEL_FONT) for a in arrows if a.kind == "scrape"]
    x = MARGIN
    for band in bands:
        band.x, band.w = MARGIN, max(map(_text_width, band.lines)) + 2 * PAD
        x, gap_w[0] = band.right, max(GAP, max(scrapes, default=0) + 12)
    for gap in range(1, columns + 1):
        labels = [_text_width(a.label, LABEL_FONT) for a in between if a.source.col == gap - 1]
        room = max(labels) + 12 if labels else 0
        gap_w.append(max(GAP, room + LANE * (len(lanes[gap]) + 1) + 4))
    col_x = []
    for col in range(columns):
        x += gap_w[col]
        col_x.append(x)
        x += col_w[col]
    consul.x = x + gap_w[columns]
    notes = [_text_width(a.label, LABEL_FONT) for a in arrows if a.kind in ("register", "check")]
    consul.w = max(*map(_text_width, consul.lines), *notes) + 2 * PAD
    # Rows: each as tall as its box; row 0 as the clients' box or Consul's header.
    rows = max(box.row for box in boxes) + 1
    row_h = [2 * PAD + LINE * len(consul.lines)] + [0] * (rows - 1)
    for box in grid:
        row_h[box.row] = max(row_h[box.row], box.h)
    y = top
    for row in range(rows):
        for box in grid:
            if box.row == row:
                box.x, box.y, box.w = col_x[box.col], y, col_w[box.col]
        y += row_h[row] + ROW_GAP
    for band in (consul, *bands):
        band.y, band.h = top, y - ROW_GAP - top
    _route(arrows, sides, lanes, [*col_x, consul.x])
    return consul.right + MARGIN, y - ROW_GAP + MARGIN


def _route(
    arrows: list[Arrow],
    sides: dict[Box, tuple[list[Arrow], list[Arrow]]],
    lanes: dict[int, list[Arrow]],
    gap_ends: list[int],
) -> None:
    """Each arrow's points: spread on its box's side, along its row to the lane it turns in."""
    ends: dict[tuple[Arrow, Box], int] = {}  # the y where an arrow meets a box's side
    for box, box_sides in sides.items():
        for side in box_sides:
            for i, arrow in enumerate(side):
                ends[arrow, box] = box.y + round(box.h * (i + 1) / (len(side) + 1))
    lane_x = {
        arrow: gap_ends[gap] - 4 - LANE * (len(turning) - i)
        for gap, turning in lanes.items()
        for i, arrow in enumerate(turning)
    }
    for arrow in arrows:
        source, target = arrow.source, arrow.target
        if arrow.kind == "database":
            x = source.x + DB_RUN
            arrow.points = [(x, source.y + source.h), (x, target.y)]
            arrow.label_at = (x + 6, (source.y + source.h + target.y) // 2 + 4)
        elif arrow.kind == "register":
            y = ends[arrow, source]
            arrow.points = [(source.right, y), (target.x, y)]
            arrow.label_at = (target.x + PAD, y + 4)
        elif arrow.kind == "scrape":
            y = ends[arrow, target]
            arrow.points = [(source.right, y), (target.x, y)]
            arrow.label_at = (source.right + 6, y - 4)
        elif arrow.kind == "check":
            y = ends[arrow, target]
            arrow.points = [(source.x, y), (target.right, y)]
            arrow.label_at = (source.x + PAD, y + 4)
        else:
            out, into = ends[arrow, source], ends[arrow, target]
            lane, end = lane_x[arrow], target.right if arrow.backward else target.x
            arrow.points = [(source.right, out), (lane, out), (lane, into), (end, into)]
            arrow.label_at = (source.right + 6, out - 4)


def _text(x: int, y: int, text: str, size: int = FONT, weight: str = "") -> str:
    bold = ' font-weight="bold"' if weight else ""
    return f'<text x="{x}" y="{y}" font-size="{size}"{bold}>{escape(text)}</text>'


def _svg_lines(
    heading: list[str], boxes: list[Box], arrows: list[Arrow], size: tuple[int, int]
) -> Iterator[str]:
    width, height = size
    yield '<?xml version="1.0" encoding="UTF-8"?>'
    yield (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif">'
    )
    yield f"<title>{escape(heading[0])}</title>"
    yield "<defs>"
    for kind, (stroke, _) in ARROWS.items():
        yield (
            f'<marker id="head-{kind}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
            f'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{stroke}"/>'
            "</marker>"
        )
    yield "</defs>"
    yield f'<rect width="{width}" height="{height}" fill="#ffffff"/>'
    yield _text(MARGIN, MARGIN + TITLE_FONT, heading[0], TITLE_FONT, "bold")
    for i, line in enumerate(heading[1:]):
        yield _text(MARGIN, MARGIN + TITLE_FONT + 18 + LINE * i, line, LABEL_FONT)
    # Consul's band under the arrows, whose notes are on it; the other boxes over their ends.
    yield from _svg_box(boxes[0])
    yield from _svg_arrows(arrows)
    for box in boxes[1:]:
        yield from _svg_box(box)
    yield "</svg>"


def _svg_box(box: Box) -> Iterator[str]:
    fill, stroke = COLOURS[box.kind]
    dashes = ' stroke-dasharray="6 4"' if box.dashed else ""
    yield f'<g id="{box.id}" class="{box.kind}">'
    yield (
        f'<rect x="{box.x}" y="{box.y}" width="{box.w}" height="{box.h}" rx="6" '
        f'fill="{fill}" stroke="{stroke}" stroke-width="1.5"{dashes}/>'
    )
    for i, line in enumerate(box.lines):
        yield _text(box.x + PAD, box.y + PAD + 12 + LINE * i, line, weight="bold" * (i == 0))
    yield "</g>"


def _svg_arrows(arrows: list[Arrow]) -> Iterator[str]:
    for arrow in arrows:
        stroke, dashes = ARROWS[arrow.kind]
        dasharray = f' stroke-dasharray="{dashes}"' if dashes else ""
        points = " ".join(f"{x},{y}" for x, y in arrow.points)
        yield (
            f'<g class="flow" data-kind="{arrow.kind}" data-from="{arrow.source.id}" '
            f'data-to="{arrow.target.id}">'
        )
        yield f"<title>{escape(arrow.title)}</title>"
        yield (
            f'<polyline points="{points}" fill="none" stroke="{stroke}" stroke-width="1.5"'
            f'{dasharray} marker-end="url(#head-{arrow.kind})"/>'
        )
        yield _text(*arrow.label_at, arrow.label, LABEL_FONT)
        yield "</g>"


def draw(services: catalog.Catalog, stack: config.StackConfig, stack_name: str) -> str:
    """The picture of `services` deployed with `stack`, as SVG text: the same bytes for the same
    catalog and settings."""
    heading = [
        f"{PROJECT}, stack {stack_name}: namespace {stack.namespace}",
        "Each arrow is a flow the NetworkPolicies allow; besides DNS, nothing else reaches a "
        "service or leaves one.",
        f"Drawn by `make graph` from services/*/service.yaml and Pulumi.{stack_name}.yaml.",
    ]
    if stack.otlp_url:
        heading.insert(
            2,
            f"Every service sends its traces to {stack.otlp_endpoint} (network "
            f"{stack.otlp_network}), its one flow there.",
        )
    boxes, arrows = _picture(services, stack)
    top = MARGIN + TITLE_FONT + 18 + LINE * (len(heading) - 1)
    width, height = _layout(boxes, arrows, top)
    widths = [_text_width(heading[0], TITLE_FONT)]
    widths += [_text_width(line, LABEL_FONT) for line in heading[1:]]
    width = max(width, 2 * MARGIN + max(widths))
    return "\n".join(_svg_lines(heading, boxes, arrows, (width, height))) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", default="dev", help="the stack whose settings count (dev)")
    parser.add_argument("--services", type=Path, default=catalog.SERVICES_DIR)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    stack_file = ROOT / f"Pulumi.{args.stack}.yaml"
    if not stack_file.is_file():
        stacks = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))
        raise SystemExit(
            f"make graph: STACK={args.stack}: no Pulumi.{args.stack}.yaml, expected one of "
            + ", ".join(stacks)
        )
    try:
        services = catalog.load(args.services)
        picture = draw(services, stack_settings(stack_file, services), args.stack)
    except (catalog.CatalogError, config.ConfigError) as error:
        raise SystemExit(f"make graph: {error}") from None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(picture)
    print(f"make graph: {args.out}: {len(services.services)} services, stack {args.stack}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
