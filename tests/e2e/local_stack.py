"""The real Pulumi engine against the local cluster: the parts it needs and a CLI runner.

Shared by the e2e tests and bench/deploy.py. Why everything is private to one run: a temporary copy
of the repo (the e2e edits a service's source there, never in the real tree), a file backend, a
passphrase and PULUMI_HOME in a temp dir, a cluster, a podman API socket and a podman network of
its own, so a developer's stacks, cluster and podman service are never touched.

Images are built outside Pulumi (pulumi-resource-docker cannot be built here, see hack/README.md),
as CI would: the `docker` CLI through podman's Docker-compatible API, then deployed by digest
through the program's services.<name>.image config.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
import requests
from google.protobuf import empty_pb2
from pulumi.runtime.proto import provider_pb2_grpc
from testkit import Cluster, copy_worktree, free_ports, wait_until
from testkit import toolchain_bin_dir as bin_dir

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "infra"))
import catalog  # noqa: E402 - the program's own service catalog
import registry  # noqa: E402 - the program's own read-back

HACK = ROOT / "hack"
# What each fault of test_faults.py did to the load (testkit.LoadReport), or a figure it measured;
# printed at the end of the run.
FAULTS: dict[str, object] = {}
# The same for test_nodes.py's node faults (its NodeFault rows), printed in a table of their own.
NODE_FAULTS: dict[str, object] = {}

PROJECT = "consul-microservices"
STACK = "local"  # Pulumi.local.yaml: the cluster's kubeconfig; the run adds the rest
NAMESPACE = "consul-microservices"
# The services the program finds: the folders with a manifest (infra/catalog.py).
SERVICES = tuple(sorted(p.parent.name for p in (ROOT / "services").glob("*/service.yaml")))
# The name each registers under in Consul (its manifest's consulName): the greeter's is the seed's.
CONSUL_NAMES = {service.name: service.consul_name for service in catalog.load()}
# The real node's registry (hack/node.sh, kind's localhost:5001 shape): pods pull only from there.
REGISTRY = "localhost:5001"
IMAGE_REPO = f"{REGISTRY}/consul-microservices-e2e"
USER_REPO = f"{REGISTRY}/consul-microservices-user"  # where the user path's pulumi-docker pushes
NODE_IP = "10.254.0.1"  # hack/cluster.sh's CLUSTER_NODE_IP: the host as the pods reach it
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")  # pip behind this machine's TLS proxy
# The toolchain's binaries the real-engine runs need (containers alone need only consul).
ENGINE_TOOLS = (
    "pulumi", "pulumi-language-python", "pulumi-resource-kubernetes", *Cluster.tools("real")
)  # fmt: skip


def missing_part(tools: tuple[str, ...]) -> str | None:
    """Why a run cannot start here (a skip reason naming the command that fixes it), or None."""
    for name in tools:
        if not (bin_dir() / name).is_file():
            return f"{name} not found: run `make toolchain`"
    if not shutil.which("podman"):
        return "podman not found: run `make container-engine`"
    if not shutil.which("docker"):
        return "docker CLI not found (it drives podman's Docker API): `apt-get install docker.io`"
    if subprocess.run(["podman", "image", "exists", base_image()], check=False).returncode:
        return f"local base image {base_image()} not found: run `make container-engine`"
    return None


def base_image() -> str:
    return _run([str(HACK / "container-engine.sh"), "base-image-name"]).stdout.strip()


def _run(args: list[str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """Runs a command; a failure raises with its output, so the test report says why."""
    done = subprocess.run(
        args, check=False, capture_output=True, text=True, timeout=timeout, **kwargs
    )
    if done.returncode:
        raise AssertionError(
            f"{' '.join(args)}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}".strip()
        )
    return done


def copy_repo(dest: Path) -> Path:
    """The working tree (tracked and untracked-not-ignored files) plus links to the shared venv and
    the policy pack's (hack/pulumi.sh runs the pack where a language host can)."""
    copy_worktree(dest)
    (dest / ".venv").symlink_to(ROOT / ".venv")
    (dest / "policy" / ".venv").symlink_to(ROOT / "policy" / ".venv")
    return dest


class ContainerEngine:
    """podman's Docker API on a socket of this run (hack/container-engine.sh start/stop)."""

    def __init__(self, state_dir: Path) -> None:
        socket = state_dir / "podman.sock"
        self.env = {
            **os.environ,
            "CONTAINER_ENGINE_DIR": str(state_dir),
            "CONTAINER_ENGINE_SOCKET": str(socket),
        }
        self.docker_host = f"unix://{socket}"

    def script(self, command: str) -> None:
        _run([str(HACK / "container-engine.sh"), command], env=self.env, timeout=300)

    def docker(self, *args: str, timeout: float = 900) -> str:
        env = {**os.environ, "DOCKER_HOST": self.docker_host, "DOCKER_BUILDKIT": "0"}
        return _run(["docker", *args], env=env, timeout=timeout).stdout.strip()

    def build(self, repo: Path, service: str) -> str:
        """Builds `service` of `repo`'s services/ through the Docker API and pushes it
        to the node's registry; returns `repo@sha256:…` as the registry has it (read back, not
        trusted from the engine: podman's Docker-compatible push reports no digest).

        The CA bundle goes into the context's git-ignored .offline/ (services/README.md), so pip
        can reach PyPI through this machine's TLS-intercepting proxy.
        """
        context = repo / "services"
        args = ["--build-arg", f"BASE_IMAGE={base_image()}", "--build-arg", f"SERVICE={service}"]
        args += ["-f", str(context / service / "Dockerfile")]
        if CA_BUNDLE.is_file():
            (context / ".offline").mkdir(exist_ok=True)
            shutil.copy(CA_BUNDLE, context / ".offline" / "ca.pem")
            args += ["--build-arg", "PIP_CA_BUNDLE=.offline/ca.pem"]
        name = f"{IMAGE_REPO}/{service}"
        self.docker("build", "--quiet", *args, "--tag", f"{name}:e2e", str(context))
        _run(["podman", "push", "--quiet", "--tls-verify=false", f"{name}:e2e"], timeout=300)
        return f"{name}@{registry_digest(f'{name}:e2e')}"


def registry_digest(reference: str) -> str | None:
    """The digest the node's registry serves for `localhost:5001/<repo>:<tag>` or `…@sha256:…`
    (None when it has no such manifest): what a pod pulling that reference gets. Asked through
    the program's own read-back (infra/registry.py)."""
    try:
        return registry.pushed_digest(reference)
    except registry.RegistryError:
        return None


def local_passphrase() -> str:
    """The passphrase of the local stacks, from the project's convention (hack/pulumi.sh)."""
    out = _run([str(HACK / "pulumi.sh"), "--convention"]).stdout
    return dict(line.split("=", 1) for line in out.splitlines())["LOCAL_PASSPHRASE"]


@dataclass
class Pulumi:
    """The pulumi CLI in `workdir` with a private file backend, passphrase and PULUMI_HOME."""

    workdir: Path
    home: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    # Pulumi.local.yaml's committed encryptionsalt goes with the local stacks' passphrase.
    passphrase: str = field(default_factory=local_passphrase)

    @property
    def state_dir(self) -> Path:
        return self.home / "state"

    @property
    def env(self) -> dict[str, str]:
        # The Python language host built here (sdk/v3 v3.79.0, hack/README.md) ignores Pulumi.yaml's
        # `virtualenv` option and runs `python3` from PATH, so the venv comes first on PATH.
        path = os.pathsep.join([str(bin_dir()), str(ROOT / ".venv" / "bin"), os.environ["PATH"]])
        return {
            **os.environ,
            "PATH": path,
            "PULUMI_HOME": str(self.home),
            "PULUMI_BACKEND_URL": f"file://{self.state_dir}",
            "PULUMI_CONFIG_PASSPHRASE": self.passphrase,
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DIY_BACKEND_NO_LEGACY_WARNING": "true",
            "CHECKPOINT_DISABLE": "1",
            **self.extra_env,
        }

    def __call__(self, *args: str, check: bool = True, timeout: float = 600):
        self.state_dir.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [str(bin_dir() / "pulumi"), "--non-interactive", *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode:
            raise AssertionError(f"pulumi {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done

    def under(self, host: Path) -> Pulumi:
        """The same CLI, backend and home, with a language host of its own version found first
        (local_stack.python_host): what the policy pack needs to run under the engine."""
        path = f"{host.parent}:{self.env['PATH']}"
        return replace(self, extra_env={**self.extra_env, "PATH": path})

    def config_set(self, key: str, value: str, secret: bool = False, path: bool = False) -> None:
        """`path`: `key` is a property path into a structured key (services.<name>.image)."""
        flags = [*(["--secret"] if secret else []), *(["--path"] if path else [])]
        self("config", "set", *flags, "--", key, value)

    def preview_steps(self) -> list[dict]:
        """The steps of `pulumi preview --json` (op, urn, ...)."""
        return json.loads(self("preview", "--json").stdout).get("steps", [])

    def outputs(self) -> dict:
        return json.loads(self("stack", "output", "--json", "--show-secrets").stdout)

    def state_text(self) -> str:
        """Every file of the backend (checkpoints, history, backups) as one string."""
        files = sorted(p for p in self.state_dir.rglob("*") if p.is_file())
        return "\n".join(p.read_text(errors="replace") for p in files)


def urn_key(urn: str) -> tuple[str, str]:
    """(type, name) of a URN: urn:pulumi:<stack>::<project>::<parent$…$type>::<name>."""
    qualified, name = urn.split("::")[2:4]
    return qualified.rsplit("$", 1)[-1], name


def changed(steps: list[dict]) -> dict[tuple[str, str], str]:
    """{(type, name): op} of every step that changes something: not `same`, and not `read` (a
    `.get` of an existing object, e.g. the API server's EndpointSlice, is read on every run)."""
    return {urn_key(s["urn"]): s["op"] for s in steps if s["op"] not in {"same", "read"}}


class PodNetwork:
    """A podman network of this run, static addresses (Debian's CNI setup has no DNS plugin)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.subnet = ""
        self.containers: list[str] = []

    def create(self) -> PodNetwork:
        for third in range(100, 200):  # the first free 10.89.x.0/24
            subnet = f"10.89.{third}.0/24"
            made = subprocess.run(
                ["podman", "network", "create", "--subnet", subnet, self.name],
                capture_output=True,
                check=False,
            )
            if made.returncode == 0:
                self.subnet = subnet
                return self
        raise AssertionError(f"no free 10.89.x.0/24 subnet for podman network {self.name}")

    def address(self, host: int) -> str:
        return self.subnet.rsplit(".", 1)[0] + f".{host}"

    def run(
        self, name: str, host: int, image: str, *args: str, env=(), publish=(), volumes=()
    ) -> str:
        """A container as Kubernetes runs the pods: uid 10001, read-only root, only /tmp writable,
        no capabilities; ports published on loopback only. Its name carries the network's, so a
        container left by an aborted run can never clash with this run's."""
        name = f"{self.name}-{name}"
        self.containers.append(name)
        flags = [f for pair in env for f in ("--env", pair)]
        flags += [f for port in publish for f in ("--publish", f"127.0.0.1::{port}")]
        flags += [f for volume in volumes for f in ("--volume", volume)]
        _run(
            ["podman", "run", "--detach", "--name", name, "--network", self.name,
             "--ip", self.address(host), "--user", "10001:10001", "--read-only",
             "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
             *flags, image, *args],
        )  # fmt: skip
        return name

    def remove(self) -> None:
        for name in self.containers:
            subprocess.run(["podman", "rm", "--force", name], capture_output=True, check=False)
        subprocess.run(["podman", "network", "rm", self.name], capture_output=True, check=False)


def published_port(container: str, port: int) -> int:
    return int(_run(["podman", "port", container, str(port)]).stdout.strip().rsplit(":", 1)[1])


def run_consul(network: PodNetwork, name: str, host: int = 10) -> str:
    """A Consul dev agent in a container of `network` (the toolchain's static binary, mounted into
    the local base image); returns its HTTP address on loopback."""
    binary = bin_dir() / "consul"
    name = network.run(
        name, host, base_image(),
        "consul", "agent", "-dev", "-client", "0.0.0.0", "-bind", network.address(host),
        "-log-level", "warn",
        env=["CHECKPOINT_DISABLE=1"], publish=[8500],
        volumes=[f"{binary}:/usr/local/bin/consul:ro"],
    )  # fmt: skip
    addr = f"127.0.0.1:{published_port(name, 8500)}"

    def leader() -> bool:
        try:
            return requests.get(f"http://{addr}/v1/status/leader", timeout=2).json() != ""
        except (requests.RequestException, ValueError):
            return False

    wait_until(leader, timeout=60, what=f"Consul leader in container {name} ({binary})")
    return addr


def plugin_version(binary: str) -> str:
    """What a Pulumi resource plugin binary says its version is (GetPluginInfo on its gRPC port)."""
    plugin = subprocess.Popen(
        [binary, "127.0.0.1:1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        port = plugin.stdout.readline().strip()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = provider_pb2_grpc.ResourceProviderStub(channel)
            return stub.GetPluginInfo(empty_pb2.Empty(), timeout=30).version
    finally:
        plugin.kill()
        plugin.wait()


def python_host() -> tuple[Path | None, str]:
    """A Python language host of the CLI's version, which can run the policy pack under the engine
    (the toolchain's, from sdk v3.79.0, cannot; hack/pulumi.sh says why), found as hack/pulumi.sh
    finds it: PULUMI_LANGUAGE_PYTHON, else a `pulumi-language-python` on PATH. (path, why not)."""
    want = f"v{requirement_pin('pulumi')}"
    named = os.environ.get("PULUMI_LANGUAGE_PYTHON") or shutil.which("pulumi-language-python")
    how = (
        f"a pulumi-language-python {want} (set PULUMI_LANGUAGE_PYTHON, or put it on PATH; the CLI "
        "from get.pulumi.com installs one beside itself)"
    )
    if not named or Path(named).resolve().parent == bin_dir().resolve():
        return None, f"no {how}"
    done = subprocess.run([named, "-version"], capture_output=True, text=True, check=False)
    if done.stdout.strip() != want:
        return None, f"{named} is {done.stdout.strip() or 'not a language host'}; needs {how}"
    return Path(named), ""


POLICY_PACK = ROOT / "policy"
# How the engine lists a pack's finding: "- [mandatory]  images-pinned  (kubernetes:…: name)".
FINDING = re.compile(r"\[(advisory|mandatory|remediate)\]\s+(\S+)\s+\(")


def findings(output: str) -> list[tuple[str, str]]:
    """(enforcement level, policy) of each finding the engine printed."""
    return FINDING.findall(output)


def requirement_pin(package: str) -> str:
    for line in (ROOT / "infra" / "requirements.txt").read_text().splitlines():
        if line.startswith(f"{package}=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"infra/requirements.txt pins no {package}")


def user_path_parts() -> tuple[dict[str, str], list[str]]:
    """The three parts of the user's path that a user downloads and this machine cannot: what was
    found, and why each missing one is missing (with where it is looked for).

    - PULUMI_DOCKER_PLUGIN (or `pulumi-resource-docker` on PATH): the plugin of the pinned
      pulumi-docker, checked by asking it its version;
    - CONSUL_CHART_PATH: a local copy of the hashicorp/consul chart at the pinned version;
    - CONSUL_K8S_CONTROL_PLANE_IMAGE: a podman image of hashicorp/consul-k8s-control-plane.
    """
    found: dict[str, str] = {}
    missing: list[str] = []
    want = requirement_pin("pulumi-docker")
    plugin = os.environ.get("PULUMI_DOCKER_PLUGIN") or shutil.which("pulumi-resource-docker")
    if not plugin or not os.access(plugin, os.X_OK):
        missing.append(
            f"no pulumi-resource-docker {want} (set PULUMI_DOCKER_PLUGIN or put it on PATH; "
            "a user gets it with `pulumi plugin install resource docker`)"
        )
    elif (version := plugin_version(plugin)) != want:
        missing.append(f"{plugin} is pulumi-resource-docker {version}, not {want}")
    else:
        found["docker plugin dir"] = str(Path(plugin).resolve().parent)
    chart = os.environ.get("CONSUL_CHART_PATH", "")
    chart_version = stack_default("consulChartVersion")
    chart_file = Path(chart) / "Chart.yaml"
    if not chart or not chart_file.is_file():
        missing.append(
            f"no Consul chart {chart_version} (set CONSUL_CHART_PATH to a local copy; a user "
            "gets it from https://helm.releases.hashicorp.com)"
        )
    elif f"version: {chart_version}" not in chart_file.read_text():
        missing.append(f"{chart} is not the Consul chart {chart_version}")
    else:
        found["chart"] = chart
    image = os.environ.get("CONSUL_K8S_CONTROL_PLANE_IMAGE", "")
    if not image or subprocess.run(["podman", "image", "exists", image], check=False).returncode:
        missing.append(
            "no consul-k8s-control-plane image (set CONSUL_K8S_CONTROL_PLANE_IMAGE to a podman "
            "image; a user pulls hashicorp/consul-k8s-control-plane from Docker Hub)"
        )
    else:
        found["control-plane image"] = image
    return found, missing


def stack_default(key: str) -> str:
    """A key's default as Pulumi.yaml declares it."""
    text = (ROOT / "Pulumi.yaml").read_text()
    block = text.split(f"consul-microservices:{key}:", 1)[1]
    return block.split("default:", 1)[1].splitlines()[0].strip().strip('"')


def registry_requests(cluster: Cluster) -> list[str]:
    """`METHOD URI` of every request the node's registry answered so far (its access log)."""
    log = cluster.state_dir / "logs" / "registry.log"
    requests_seen = []
    for line in log.read_text().splitlines():
        if 'msg="response completed"' not in line:
            continue
        fields = dict(re.findall(r'http\.request\.(method|uri)=("[^"]*"|\S+)', line))
        requests_seen.append(f"{fields['method'].strip(chr(34))} {fields['uri'].strip(chr(34))}")
    return requests_seen


class HostConsul:
    """A Consul dev agent on this host, serving on the node's address, where pods reach it (an
    external Consul to the program). `restart` keeps its ports; a dev agent keeps nothing else, as
    a Consul that lost its data: the services must register again by themselves."""

    def __init__(self, data_dir: Path) -> None:
        http_port, serf_lan, serf_wan, server = free_ports(4)
        self.data_dir = data_dir
        self.addr = f"{NODE_IP}:{http_port}"
        self.args = [str(bin_dir() / "consul"), "agent", "-dev", "-bind", NODE_IP]
        self.args += ["-client", NODE_IP, "-http-port", str(http_port), "-grpc-port", "-1"]
        self.args += ["-dns-port", "-1", "-serf-lan-port", str(serf_lan)]
        self.args += ["-serf-wan-port", str(serf_wan), "-server-port", str(server)]
        self.args += ["-data-dir", str(data_dir), "-log-level", "warn"]
        self._agent: subprocess.Popen | None = None

    def leader(self) -> bool:
        try:
            return requests.get(f"http://{self.addr}/v1/status/leader", timeout=2).json() != ""
        except (requests.RequestException, ValueError):
            return False

    def start(self) -> HostConsul:
        log = self.data_dir / "consul.log"
        with log.open("a") as out:
            self._agent = subprocess.Popen(
                self.args, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "CHECKPOINT_DISABLE": "1"},
            )  # fmt: skip
        wait_until(self.leader, timeout=60, what=f"Consul leader at {self.addr} (log: {log})")
        return self

    def stop(self) -> None:
        if self._agent is not None:
            self._agent.terminate()
            self._agent.wait(timeout=30)
            self._agent = None

    def passing(self, service: str) -> int:
        """How many instances of `service` Consul lists as passing (-1: it does not answer)."""
        try:
            return len(self.entries(service))
        except (requests.RequestException, ValueError):
            return -1

    def entries(self, service: str) -> list[dict]:
        """The passing instances of `service` (Consul's /v1/health/service entries)."""
        url = f"http://{self.addr}/v1/health/service/{service}?passing"
        return requests.get(url, timeout=2).json()


@contextmanager
def host_consul(data_dir: Path) -> Iterator[str]:
    """A HostConsul for the block; yields its HTTP address."""
    agent = HostConsul(data_dir).start()
    try:
        yield agent.addr
    finally:
        agent.stop()


CONSUL_NAMESPACE = "consul"  # the chart's release namespace (infra/consul_server.py)


@dataclass
class ChartConsul:
    """The Consul server the chart installed, read from the host with the chart's bootstrap
    token (ACLs are on, default deny); the same questions as HostConsul."""

    cluster: Cluster

    def server_pod(self) -> dict:
        return json.loads(
            self.cluster.kubectl("-n", CONSUL_NAMESPACE, "get", "pod", "consul-server-0",
                                 "-o", "json").stdout
        )  # fmt: skip

    @property
    def url(self) -> str:
        """Its HTTP API (its Service is headless; the host reaches pods)."""
        return f"http://{self.server_pod()['status']['podIP']}:8500"

    def token(self) -> str:
        secret = self.cluster.kubectl(
            "-n", CONSUL_NAMESPACE, "get", "secret", "consul-bootstrap-acl-token",
            "-o", "jsonpath={.data.token}",
        ).stdout  # fmt: skip
        return base64.b64decode(secret).decode()

    def get(self, path: str) -> requests.Response:
        return requests.get(f"{self.url}{path}", headers={"X-Consul-Token": self.token()},
                            timeout=5)  # fmt: skip

    def entries(self, service: str) -> list[dict]:
        return self.get(f"/v1/health/service/{service}?passing").json()

    def passing(self, service: str) -> int:
        try:
            return len(self.entries(service))
        except (AssertionError, requests.RequestException, ValueError, KeyError):
            return -1


def prometheus_settings(image: str | None) -> dict[str, str]:
    """The stack's Prometheus from `image` (hack/local-stack.sh prometheus-image), or off."""
    return {"prometheusImage": image} if image else {"prometheusInstall": "false"}


@dataclass
class LocalStack:
    """A temp copy of the repo deployed as stack `local` onto a running cluster."""

    repo: Path
    pulumi: Pulumi
    cluster: Cluster
    registry_user: str = "e2e-robot"
    registry_password: str = field(default_factory=lambda: "pw-" + secrets.token_hex(12))

    def init(
        self, consul_addr: str, images: dict[str, str], postgres_image: str,
        prometheus_image: str | None = None,
    ) -> None:  # fmt: skip
        """The stack file's values plus what only this run knows, the password as a secret.
        Without `prometheus_image` the stack's Prometheus is off (a run that reads no metrics)."""
        self.reclaim_volumes()
        self.pulumi("stack", "init", STACK)
        self.pulumi.config_set("kubeconfig", str(self.cluster.kubeconfig))
        self.pulumi.config_set("postgresImage", postgres_image)
        for key, value in prometheus_settings(prometheus_image).items():
            self.pulumi.config_set(key, value)
        self.pulumi.config_set("consulInstall", "false")
        self.pulumi.config_set("consulAddress", f"http://{consul_addr}")
        self.pulumi.config_set("consulExternalCidr", f"{NODE_IP}/32")
        self.pulumi.config_set("imageRegistry", IMAGE_REPO)  # what the pull secret is for
        self.pulumi.config_set("registryUsername", self.registry_user)
        self.pulumi.config_set("registryPassword", self.registry_password, secret=True)
        self.set_images(images)

    def init_user_path(
        self, stack: str, parts: dict[str, str], chart_images: dict[str, str],
        postgres_image: str, docker_host: str, *, prometheus_image: str | None = None,
    ) -> None:  # fmt: skip
        """The user's path, as close to Pulumi.dev.yaml as this machine allows:
        `imageDelivery=push` through pulumi_docker.Image over podman's Docker API into the node's
        registry, and `consulInstall=true` from the local copy of the chart, its images mirrored
        (`chart_images`, from `hack/local-stack.sh chart-images`). Only what this machine
        forces differs."""
        self.pulumi.extra_env = {
            "DOCKER_HOST": docker_host,
            "PATH": f"{parts['docker plugin dir']}:{self.pulumi.env['PATH']}",
        }
        self.reclaim_volumes()
        self.pulumi("stack", "init", stack)
        settings = {
            "clusterProfile": "existing",
            "kubeconfig": str(self.cluster.kubeconfig),
            "imageDelivery": "push",
            "imageRegistry": USER_REPO,
            "dockerBuilder": "BuilderV1",  # podman's Docker API has no BuildKit session
            "baseImage": base_image(),
            "consulChartPath": parts["chart"],
            "postgresImage": postgres_image,
            **prometheus_settings(prometheus_image),
            **chart_images,
        }
        if CA_BUNDLE.is_file():  # pip behind this machine's TLS proxy (services/README.md)
            offline = self.repo / "services" / ".offline"
            offline.mkdir(exist_ok=True)
            shutil.copy(CA_BUNDLE, offline / "ca.pem")
            self.pulumi.config_set("imageBuildArgs[0]", "PIP_CA_BUNDLE=.offline/ca.pem", path=True)
        for key, value in settings.items():
            self.pulumi.config_set(key, value)

    def reclaim_volumes(self) -> None:
        """What `make up`'s `hack/cluster.sh up` does on a running cluster before a new stack:
        the volumes of an earlier stack's deleted claims become Available again."""
        done = self.cluster.script("reclaim")
        assert done.returncode == 0, f"cluster.sh reclaim failed:\n{done.stdout}\n{done.stderr}"

    def set_images(self, images: dict[str, str]) -> None:
        for service, ref in images.items():
            self.pulumi.config_set(f"services.{service}.image", ref, path=True)

    def secret_forms(self) -> list[str]:
        """The password as the state could leak it: plain and inside a dockerconfigjson auth."""
        auth = f"{self.registry_user}:{self.registry_password}".encode()
        return [self.registry_password, base64.b64encode(auth).decode()]

    def kubectl_json(self, *args: str) -> dict:
        return json.loads(self.cluster.kubectl(*args, "-o", "json").stdout)


@contextmanager
def timed(record: dict[str, float], step: str) -> Iterator[None]:
    """Records the wall time of a `with` block under `step`, in seconds."""
    start = time.monotonic()
    try:
        yield
    finally:
        record[step] = round(time.monotonic() - start, 1)


@contextmanager
def port_forward(kubectl: list[str], service: str, port: int) -> Iterator[str]:
    """`kubectl port-forward svc/<service>` (as make up prints it, the only way to a Service
    that no policy opens to this host); `kubectl`: the command with its cluster flags. Yields
    the base URL."""
    local = free_ports(1)[0]
    forward = subprocess.Popen(
        [*kubectl, "-n", NAMESPACE, "port-forward", f"svc/{service}", f"{local}:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert forward.stdout.readline().startswith("Forwarding from"), "port-forward failed"
        yield f"http://127.0.0.1:{local}"
    finally:
        forward.terminate()
        forward.wait(timeout=10)


def served(prometheus: str) -> dict[str, float]:
    """The requests each service has served, as the program's Prometheus scraped them from its
    metrics port: its RED family's count by job (its name), the kubelet's health probes left out,
    so a figure that grows is traffic and nothing else."""
    queries = []
    for service in catalog.load():
        if service.protocol == "grpc":
            family = "grpc_server_handling_seconds_count"
            others = 'grpc_service!="grpc.health.v1.Health"'
        else:
            health = "|".join(sorted({service.health.liveness, service.health.readiness}))
            family, others = "http_request_duration_seconds_count", f'route!~"{health}"'
        queries.append(f'sum by (job) ({family}{{job="{service.name}",{others}}})')
    answer = requests.get(
        f"{prometheus}/api/v1/query", params={"query": " or ".join(queries)}, timeout=10
    )
    answer.raise_for_status()
    return {r["metric"]["job"]: float(r["value"][1]) for r in answer.json()["data"]["result"]}


def first_scrape(prometheus: str) -> dict[str, float]:
    """`served` once Prometheus has scraped every service of the catalog."""
    return wait_until(
        lambda: (counts := served(prometheus)).keys() == set(SERVICES) and counts,
        timeout=90,
        interval=1,
        what="Prometheus's first scrape of every service",
    )


def wait_counted(prometheus: str, before: dict[str, float], load: dict[str, int]) -> None:
    """Waits (a scrape interval or so) until each service's count has grown by its `load`."""
    wait_until(
        lambda: all(
            served(prometheus).get(name, 0) - before[name] >= count for name, count in load.items()
        ),
        timeout=60,
        interval=1,
        what=f"Prometheus to count the load {load} (before: {before})",
    )
