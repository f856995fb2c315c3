"""Checks of the Docker-free toolchain: Go-built binaries, local cluster, container engine.

Each check skips, naming the make target, when its part is absent; else it starts what it needs.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest
from testkit import (
    HACK,
    ROOT,
    free_port,
    local_base_image,
    tool,
    toolchain_bin_dir,
    wait_until,
)

pytestmark = pytest.mark.toolchain


def versions() -> dict[str, str]:
    """The pins of hack/versions.env."""
    pins = {}
    for line in (HACK / "versions.env").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            pins[key.strip()] = value.strip()
    return pins


def requirement_pin(package: str) -> str:
    text = (ROOT / "infra" / "requirements.txt").read_text()
    match = re.search(rf"^{re.escape(package)}==(\S+)", text, re.MULTILINE)
    assert match, f"infra/requirements.txt pins no {package}"
    return match.group(1)


def semver_of(pep440: str) -> str:
    """PyPI's 4.25.0 is the plugin's 4.25.0; a dev build 4.25.0a17 would be 4.25.0-alpha.17."""
    return re.sub(r"a(\d+)$", r"-alpha.\1", pep440)


def test_pins_match_python_sdks():
    pins = versions()
    assert pins["PULUMI_VERSION"] == "v" + requirement_pin("pulumi")
    assert pins["PULUMI_KUBERNETES_VERSION"] == semver_of(requirement_pin("pulumi-kubernetes"))


def test_the_prometheus_module_is_the_release_the_program_pins():
    """Module v0.3XX.Y is release v3.XX.Y: what the Docker-free clusters build is what the
    program runs elsewhere (infra/prometheus.py's DEFAULT_IMAGE)."""
    module = re.fullmatch(r"v0\.3(\d\d)\.(\d+)", versions()["PROMETHEUS_VERSION"])
    assert module, versions()["PROMETHEUS_VERSION"]
    release = f"v3.{int(module.group(1))}.{module.group(2)}"
    source = (ROOT / "infra" / "prometheus.py").read_text()
    assert f'"docker.io/prom/prometheus:{release}"' in source


def test_pulumi_version_is_the_pin():
    """The toolchain's binary only: a user's own pulumi on PATH is not this check's business."""
    pulumi = toolchain_bin_dir() / "pulumi"
    if not pulumi.is_file():
        pytest.skip(f"{pulumi} not found: run `make toolchain`")
    out = subprocess.run([pulumi, "version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == versions()["PULUMI_VERSION"]


def test_the_version_check_ignores_another_pulumi_on_path(tmp_path):
    """Another pulumi on PATH (a user's, or a GitHub runner's preinstalled one) keeps it green."""
    fake = tmp_path / "pulumi"
    fake.write_text("#!/bin/sh\necho v3.100.0\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    check = f"{__file__}::test_pulumi_version_is_the_pin"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", check],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout


def test_kubernetes_provider_installs_from_the_built_binary(tmp_path):
    """The plugin is registered from the local file, with plugin downloads disabled."""
    pulumi, provider = tool("pulumi"), tool("pulumi-resource-kubernetes")
    version = versions()["PULUMI_KUBERNETES_VERSION"]
    env = {
        **os.environ,
        "PULUMI_HOME": str(tmp_path),
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
    }
    install = [pulumi, "plugin", "install", "resource", "kubernetes", version, "-f", provider]
    subprocess.run(install, env=env, capture_output=True, check=True, timeout=120)
    listed = subprocess.run(
        [pulumi, "plugin", "ls", "--json"], env=env, capture_output=True, text=True, check=True
    )
    plugins = {(p["name"], p["kind"], p["version"]) for p in json.loads(listed.stdout)}
    assert ("kubernetes", "resource", version) in plugins


def test_consul_dev_agent_answers_leader(tmp_path):
    consul = tool("consul")
    http_port = free_port()
    args = [consul, "agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1"]
    args += ["-http-port", str(http_port), "-grpc-port", "-1", "-dns-port", "-1"]
    args += ["-serf-lan-port", str(free_port()), "-serf-wan-port", str(free_port())]
    args += ["-server-port", str(free_port()), "-data-dir", str(tmp_path)]
    env = {**os.environ, "CHECKPOINT_DISABLE": "1"}
    agent = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{http_port}/v1/status/leader"

    def leader():
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return json.load(response)
        except OSError:
            return None

    try:
        assert wait_until(leader, timeout=30, what="a consul leader").startswith("127.0.0.1:")
    finally:
        agent.terminate()
        agent.wait(timeout=30)


def test_cluster_reports_pinned_version_and_ready_node(cluster):
    server = json.loads(cluster.kubectl("version", "-o", "json").stdout)["serverVersion"]
    assert server["gitVersion"] == versions()["KUBERNETES_VERSION"]
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    ready = {
        n["metadata"]["name"]: c["status"]
        for n in nodes
        for c in n["status"]["conditions"]
        if c["type"] == "Ready"
    }
    assert ready == {"kwok-node-0": "True"}


def test_deployment_pods_become_ready(cluster, namespace):
    """The pods request every resource the program's pods request, ephemeral storage included."""
    cluster.kubectl("-n", namespace, "create", "deployment", "web", "--image=nginx", "--replicas=2")
    cluster.kubectl(
        "-n",
        namespace,
        "set",
        "resources",
        "deployment/web",
        "--requests=cpu=50m,memory=96Mi,ephemeral-storage=32Mi",
        "--limits=cpu=500m,memory=256Mi,ephemeral-storage=128Mi",
    )
    cluster.kubectl("-n", namespace, "rollout", "status", "deployment/web", "--timeout=60s")
    deployment = json.loads(
        cluster.kubectl("-n", namespace, "get", "deployment", "web", "-o", "json").stdout
    )
    assert deployment["status"]["readyReplicas"] == 2


PRIVILEGED_POD = """
apiVersion: v1
kind: Pod
metadata: {name: privileged}
spec:
  containers:
  - name: main
    image: busybox
    securityContext: {privileged: true}
"""


def test_restricted_namespace_rejects_privileged_pod(cluster, namespace):
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    denied = cluster.kubectl("-n", namespace, "apply", "-f", "-", stdin=PRIVILEGED_POD, check=False)
    assert denied.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in denied.stderr
    assert "privileged" in denied.stderr


def test_privileged_pod_is_admitted_without_the_label(cluster, namespace):
    """The rejection above is PodSecurity's: the API server itself allows privileged pods."""
    cluster.kubectl("-n", namespace, "apply", "-f", "-", stdin=PRIVILEGED_POD)


STATEFULSET = """
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: postgres}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
"""


def test_statefulset_volume_claim_binds(cluster, namespace):
    cluster.kubectl("-n", namespace, "apply", "-f", "-", stdin=STATEFULSET)
    cluster.kubectl("-n", namespace, "rollout", "status", "statefulset/db", "--timeout=60s")
    claim = json.loads(
        cluster.kubectl("-n", namespace, "get", "pvc", "data-db-0", "-o", "json").stdout
    )
    assert claim["status"]["phase"] == "Bound"
    assert claim["spec"]["storageClassName"] == "standard"


CLAIM = """
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: scratch}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
"""


def test_a_deleted_claims_volume_is_emptied_and_reclaimed(cluster, namespace):
    """hack/cluster.sh reclaim (make up runs it): a destroyed stack's volumes serve the next one."""
    cluster.kubectl("-n", namespace, "apply", "-f", "-", stdin=CLAIM)
    claim = wait_until(
        lambda: (
            (c := _json(cluster, "-n", namespace, "get", "pvc", "scratch"))["status"].get("phase")
            == "Bound"
            and c
        ),
        timeout=30,
        what="the claim bound",
    )
    volume = claim["spec"]["volumeName"]
    path = Path(_json(cluster, "get", "pv", volume)["spec"]["hostPath"]["path"])
    (path / "old-data").write_text("a destroyed stack's")
    cluster.kubectl("-n", namespace, "delete", "pvc", "scratch", "--wait")
    wait_until(
        lambda: _json(cluster, "get", "pv", volume)["status"]["phase"] == "Released",
        timeout=30,
        what=f"{volume} released",
    )
    done = cluster.script("reclaim")
    assert done.returncode == 0, done.stderr
    assert f"volume {volume} reclaimed" in done.stderr
    assert _json(cluster, "get", "pv", volume)["status"]["phase"] == "Available"
    assert list(path.iterdir()) == []


def _json(cluster, *args: str) -> dict:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


PROGRAM = """
import pulumi
import pulumi_kubernetes as k8s

provider = k8s.Provider("local", kubeconfig=pulumi.Config().require("kubeconfig"))
ns = k8s.core.v1.Namespace(
    "engine-check",
    metadata={"name": "engine-check"},
    opts=pulumi.ResourceOptions(provider=provider),
)
pulumi.export("uid", ns.metadata.uid)
"""


def test_python_program_runs_under_the_real_engine(cluster, tmp_path):
    """pulumi up/destroy of a Python program: CLI, language host, executor and provider."""
    bindir = tool("pulumi").rsplit("/", 1)[0]
    for name in ("pulumi-language-python", "pulumi-language-python-exec"):
        tool(name)
    tool("pulumi-resource-kubernetes")
    project = tmp_path / "project"
    project.mkdir()
    (project / "__main__.py").write_text(textwrap.dedent(PROGRAM))
    (project / "Pulumi.yaml").write_text("name: engine-check\nruntime: python\n")
    state = tmp_path / "state"
    state.mkdir()
    env = {
        **os.environ,
        # The venv's python (with the pinned SDKs) is the one the language host finds first.
        "PATH": f"{bindir}:{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
        "PULUMI_HOME": str(tmp_path / "home"),
        "PULUMI_BACKEND_URL": f"file://{state}",
        "PULUMI_CONFIG_PASSPHRASE": "test",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
    }

    def pulumi(*args: str) -> str:
        out = subprocess.run(
            ["pulumi", *args, "--non-interactive"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=240,
        )
        assert out.returncode == 0, f"pulumi {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
        return out.stdout

    pulumi("stack", "init", "dev")
    pulumi("config", "set", "kubeconfig", str(cluster.kubeconfig))
    pulumi("up", "--yes", "--skip-preview")
    uid = pulumi("stack", "output", "uid").strip()
    live = json.loads(cluster.kubectl("get", "namespace", "engine-check", "-o", "json").stdout)
    assert live["metadata"]["uid"] == uid
    pulumi("destroy", "--yes", "--skip-preview")
    gone = cluster.kubectl("get", "namespace", "engine-check", "-o", "json", check=False)
    assert gone.returncode != 0 or json.loads(gone.stdout)["status"]["phase"] == "Terminating"


@pytest.fixture(scope="module")
def base_image():
    """podman and the local Python base image, both from `make container-engine`."""
    name = local_base_image()
    return shutil.which("podman"), name


CONTAINERFILE = """
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip --version
USER 10001:10001
CMD ["/opt/venv/bin/python", "-c", "import sys; print('hello from', sys.version.split()[0])"]
"""


def test_podman_builds_and_runs_an_image_from_the_local_base(base_image, tmp_path):
    podman, base = base_image
    (tmp_path / "Containerfile").write_text(CONTAINERFILE)
    tag = f"localhost/toolchain-check:{os.getpid()}"
    build = [podman, "build", "--runtime", "runc", "--build-arg", f"BASE_IMAGE={base}", "-t", tag]
    subprocess.run(
        [*build, str(tmp_path)],
        capture_output=True,
        check=True,
        timeout=300,
    )
    try:
        run = subprocess.run(
            [podman, "run", "--rm", "--runtime", "runc", "--read-only", tag],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        assert run.stdout.strip().startswith("hello from 3.11.")
    finally:
        subprocess.run([podman, "rmi", "-f", tag], capture_output=True, check=False)


def test_podman_serves_the_docker_api_on_a_socket(base_image, tmp_path):
    """What pulumi-docker and Docker clients talk to through DOCKER_HOST."""
    podman, base = base_image
    sock = tmp_path / "podman.sock"
    service = subprocess.Popen(
        [podman, "--runtime", "runc", "system", "service", "--time", "0", f"unix://{sock}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def api(path: str):
        out = subprocess.run(
            ["curl", "-sf", "--unix-socket", str(sock), f"http://d{path}"],
            capture_output=True,
            text=True,
            check=False,
        )
        return out.stdout if out.returncode == 0 else None

    try:
        assert wait_until(lambda: api("/_ping"), timeout=30, what="the podman API") == "OK"
        version = json.loads(api("/version"))
        assert any(c["Name"] == "Podman Engine" for c in version["Components"])
        tags = {t for image in json.loads(api("/images/json")) for t in image["RepoTags"] or []}
        assert base in tags
    finally:
        service.terminate()
        service.wait(timeout=30)
