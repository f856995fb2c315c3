"""The stack file `make up CLUSTER=local` writes (hack/local-stack.sh), in each Consul mode, is one
the program accepts: only that mode's keys, and the program deploys what the mode says.

hack/local-stack.sh is sourced with its side effects stood in for (podman logs its calls; the
Consul agent and the server image build are not started), so its own code writes the file.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from infra_harness import (
    RELEASE,
    ROOT,
    SERVICES,
    deploy,
    project_defaults,
    stack_file_config,
)

CHART_VALUES = """global:
  enabled: true
  image: hashicorp/consul:1.22.3
  imagePullSecrets: []
  imageK8S: hashicorp/consul-k8s-control-plane:1.9.3
"""
CONSUL_IMAGE = "localhost:5001/hashicorp/consul@sha256:" + "1" * 64
PUSHED_DIGEST = "2" * 64
# What `prepare` sets without a pulumi-docker plugin: images podman pushed, by digest.
PREBUILT_IMAGES = {
    service: {"image": f"localhost:5001/consul-microservices/{service}@sha256:{'0' * 64}"}
    for service in SERVICES
}


def written_stack_file(tmp_path: Path, **env: str) -> tuple[dict[str, str], list[str]]:
    """The config hack/local-stack.sh writes after `consul_config`, and the podman calls."""
    fakes, calls = tmp_path / "fakes", tmp_path / "calls.log"
    fakes.mkdir()
    # It logs its calls, and a push with --digestfile writes the digest it "pushed".
    (fakes / "podman").write_text(
        f'#!/bin/bash\necho "$*" >>{calls}\n'
        f'[ "$1 $4" != "push --digestfile" ] || echo sha256:{PUSHED_DIGEST} >"$5"\n'
    )
    (fakes / "podman").chmod(0o755)
    script = f"""
        source {ROOT / "hack" / "local-stack.sh"}
        start_consul() {{ echo "consul agent started" >>{calls}; }}
        cmd_consul_image() {{ echo {CONSUL_IMAGE}; }}
        declare -A config=([kubeconfig]={tmp_path} [services]='{json.dumps(PREBUILT_IMAGES)}')
        consul_config
        write_config
    """
    done = subprocess.run(
        ["bash", "-c", script],
        env={k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
        | {"PATH": f"{fakes}:{os.environ['PATH']}", "CLUSTER_DIR": str(tmp_path)}
        | env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    stack_file = tmp_path / "Pulumi.local.yaml"
    written = {k.split(":", 1)[1] for k in yaml.safe_load(stack_file.read_text())["config"]}
    config = stack_file_config(stack_file)
    return {k: v for k, v in config.items() if k in written}, (
        calls.read_text().splitlines() if calls.exists() else []
    )


@pytest.fixture
def chart(tmp_path) -> Path:
    path = tmp_path / "consul-chart"
    path.mkdir()
    (path / "Chart.yaml").write_text("name: consul\nversion: 1.9.3\n")
    (path / "values.yaml").write_text(CHART_VALUES)
    return path


def test_chart_mode_mirrors_the_charts_images_and_sets_no_external_consul_key(tmp_path, chart):
    written, calls = written_stack_file(
        tmp_path,
        CONSUL_CHART_PATH=str(chart),
        CONSUL_K8S_CONTROL_PLANE_IMAGE="localhost/consul-k8s-control-plane:1.9.3",
    )
    mirror = "localhost:5001/hashicorp/consul-k8s-control-plane"
    assert calls[:2] == [
        "image exists localhost/consul-k8s-control-plane:1.9.3",
        f"tag localhost/consul-k8s-control-plane:1.9.3 {mirror}:1.9.3",
    ]
    assert calls[2].startswith("push --quiet --tls-verify=false --digestfile ")
    assert calls[2].endswith(f" {mirror}:1.9.3")
    assert len(calls) == 3
    # Deployed by the digest the push reported, as every image the local stacks run.
    mirrored = f"{mirror}@sha256:{PUSHED_DIGEST}"
    assert written["consulInstall"] == "true"
    assert written["consulChartPath"] == str(chart)
    assert written["consulImage"] == CONSUL_IMAGE
    assert written["consulK8sImage"] == mirrored
    assert not {"consulAddress", "consulExternalCidr"} & set(written)

    values = deploy(project_defaults() | written).one(RELEASE, "consul").inputs["values"]["global"]
    assert (values["image"], values["imageK8S"]) == (CONSUL_IMAGE, mirrored)


def test_chart_mode_without_the_control_plane_image_says_where_a_user_gets_it(tmp_path, chart):
    with pytest.raises(AssertionError, match="CONSUL_K8S_CONTROL_PLANE_IMAGE: no podman image"):
        written_stack_file(tmp_path, CONSUL_CHART_PATH=str(chart))


def test_agent_mode_starts_the_agent_and_sets_no_chart_key(tmp_path):
    written, calls = written_stack_file(tmp_path)
    assert calls == ["consul agent started"]
    assert written["consulInstall"] == "false"
    assert written["consulAddress"] == "http://10.254.0.1:8500"
    assert written["consulExternalCidr"] == "10.254.0.1/32"
    assert not {"consulChartPath", "consulImage", "consulK8sImage"} & set(written)

    deployed = deploy(project_defaults() | written)
    assert deployed.of_type(RELEASE) == []
    assert deployed.outputs["consul"]["httpAddr"] == "http://10.254.0.1:8500"
