"""infra/registry.py against a real distribution registry (the toolchain's, the local node's).

The program deploys the digest the registry reports for a pushed tag, not the engine's report of
the push (podman's is wrong); these check the read-back on a registry on a loopback port.
"""

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest
import requests
from testkit import ROOT, free_port, require_root, tool, wait_until

sys.path.insert(0, str(ROOT / "infra"))
import images
import registry

pytestmark = pytest.mark.toolchain


@pytest.fixture
def local_registry(tmp_path):
    port = free_port()
    config = tmp_path / "config.yml"
    config.write_text(
        f"version: 0.1\nstorage: {{filesystem: {{rootdirectory: {tmp_path / 'data'}}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\n"
    )
    server = subprocess.Popen(
        [tool("registry"), "serve", str(config)],
        env={"OTEL_TRACES_EXPORTER": "none", "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return requests.get(f"{url}/v2/", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    wait_until(answers, timeout=30, what="the registry")
    yield f"localhost:{port}", url
    server.terminate()
    server.wait(timeout=10)


def push_manifest(url: str, repository: str, tag: str, label: str) -> str:
    """Pushes a one-config OCI manifest by hand (blob upload, manifest PUT); returns its digest."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {
        "test": label}}, "rootfs": {"type": "layers", "diff_ids": []}}).encode()  # fmt: skip
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    upload = requests.post(f"{url}/v2/{repository}/blobs/uploads/", timeout=10)
    location = upload.headers["Location"]
    location = location if location.startswith("http") else url + location
    done = requests.put(location, params={"digest": config_digest}, data=config, timeout=10)
    assert done.status_code == 201, done.text
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [],
    }).encode()  # fmt: skip
    put = requests.put(
        f"{url}/v2/{repository}/manifests/{tag}",
        data=manifest,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        timeout=10,
    )
    assert put.status_code == 201, put.text
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


def test_read_back_is_what_the_registry_serves_for_the_tag(local_registry):
    host, url = local_registry
    first = push_manifest(url, "app/greeter", "pulumi-build", "one")
    assert registry.pushed_digest(f"{host}/app/greeter:pulumi-build") == first
    # The tag moves with the next push; the read-back follows it.
    second = push_manifest(url, "app/greeter", "pulumi-build", "two")
    assert second != first
    assert registry.pushed_digest(f"{host}/app/greeter:pulumi-build") == second
    # A digest reference resolves while the registry holds that manifest.
    assert registry.pushed_digest(f"{host}/app/greeter@{first}") == first


def test_a_tag_the_registry_lacks_is_a_clear_error(local_registry):
    host, _ = local_registry
    with pytest.raises(registry.RegistryError, match="HTTP 404"):
        registry.pushed_digest(f"{host}/app/books-api:pulumi-build")


def test_a_tag_the_registry_lost_is_pushed_again_and_read_back(local_registry):
    """A registry recreated without its data: `up` pushes the local image again (the provider
    would not: nothing it builds from changed) instead of failing the read-back with a 404."""
    host, url = local_registry
    name = f"{host}/app/greeter:pulumi-build"
    pushed = []

    def push(reference, username, password):
        pushed.append((reference, username, password))
        push_manifest(url, "app/greeter", "pulumi-build", "again")

    reference = images.served_reference(name, None, None, dry_run=False, push=push)
    assert pushed == [(name, None, None)]
    assert reference == f"{host}/app/greeter@{registry.pushed_digest(name)}"
    # Once the registry has it, nothing is pushed.
    assert images.served_reference(name, None, None, dry_run=False, push=push) == reference
    assert len(pushed) == 1


def test_a_preview_pushes_nothing_and_runs_the_tag(local_registry):
    host, _ = local_registry
    name = f"{host}/app/greeter:pulumi-build"

    def push(*_):
        raise AssertionError("a preview pushed")

    assert images.served_reference(name, None, None, dry_run=True, push=push) == name
    with pytest.raises(registry.NotInRegistry):
        registry.pushed_digest(name)


@pytest.fixture
def docker_api(tmp_path, local_registry, monkeypatch):
    """podman's Docker API on a socket of this test, told that the test's registry is plain HTTP."""
    require_root("podman's Docker API runs rootful (hack/container-engine.sh)")
    if not shutil.which("podman"):
        pytest.skip("podman not installed: `make container-engine` installs it")
    host, _ = local_registry
    registries = tmp_path / "registries.conf"
    registries.write_text(f'[[registry]]\nlocation = "{host}"\ninsecure = true\n')
    socket = tmp_path / "podman.sock"
    env = os.environ | {
        "CONTAINER_ENGINE_DIR": str(tmp_path / "engine"),
        "CONTAINER_ENGINE_SOCKET": str(socket),
        "CONTAINERS_REGISTRIES_CONF": str(registries),
    }
    engine = [str(ROOT / "hack" / "container-engine.sh")]
    subprocess.run([*engine, "start"], env=env, check=True, capture_output=True, timeout=300)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{socket}")
    yield env
    subprocess.run([*engine, "stop"], env=env, check=False, capture_output=True, timeout=60)


def test_the_local_image_is_pushed_again_through_the_docker_api(local_registry, docker_api):
    """The real push: the image the daemon holds under the pushed tag, through DOCKER_HOST."""
    host, _ = local_registry
    name = f"{host}/app/tiny:pulumi-build"
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        data = b"a file of an image the registry lost\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    subprocess.run(
        ["podman", "import", "-", name], input=layer.getvalue(), env=docker_api, check=True,
        capture_output=True, timeout=120,
    )  # fmt: skip
    try:
        reference = images.served_reference(name, None, None, dry_run=False)
        assert reference == f"{host}/app/tiny@{registry.pushed_digest(name)}"
    finally:
        subprocess.run(["podman", "rmi", "-f", name], check=False, capture_output=True)


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("localhost:5001/app/greeter:t", ("localhost:5001", "app/greeter", "t")),
        ("ghcr.io/acme/greeter:t", ("ghcr.io", "acme/greeter", "t")),
        ("acme/greeter:t", (registry.DOCKER_HUB, "acme/greeter", "t")),
        ("greeter:t", (registry.DOCKER_HUB, "library/greeter", "t")),
        ("localhost:5001/app/greeter@sha256:ab", ("localhost:5001", "app/greeter", "sha256:ab")),
    ],
)
def test_references_split_as_docker_does(reference, expected):
    assert registry.split_reference(reference) == expected
