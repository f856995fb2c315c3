"""infra/registry.py against a real distribution registry (the toolchain's, the local node's).

The program deploys the digest the registry reports for a pushed tag, not the engine's report of
the push (podman's is wrong); these check the read-back on a registry on a loopback port.
"""

import hashlib
import json
import subprocess
import sys

import pytest
import requests
from testkit import ROOT, free_port, tool, wait_until

sys.path.insert(0, str(ROOT / "infra"))
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
