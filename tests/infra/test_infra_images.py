"""The no-push image tag hashes what the build sees; pushed images run by digest."""

from __future__ import annotations

import shutil

from infra_harness import (
    IMAGE,
    PROFILES,
    RELEASE,
    SECRET_KEYS,
    deploy,
    infra_module,
    stack_config,
)

images = infra_module("images")
context_hash = images.context_hash


def _context(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "app" / "main.py").write_text("print('hi')\n")
    (tmp_path / ".dockerignore").write_text("# comment\ntests/\n*.log\n")
    return tmp_path


def test_hash_is_stable_and_follows_content(tmp_path):
    ctx = _context(tmp_path)
    first = context_hash(ctx, {})
    assert first == context_hash(ctx, {})
    assert len(first) == 12
    (ctx / "app" / "main.py").write_text("print('bye')\n")
    assert context_hash(ctx, {}) != first


def test_hash_ignores_what_the_build_does_not_see(tmp_path):
    ctx = _context(tmp_path)
    before = context_hash(ctx, {})
    (ctx / "tests").mkdir()
    (ctx / "tests" / "test_x.py").write_text("x = 1\n")
    (ctx / "build.log").write_text("noise\n")
    assert context_hash(ctx, {}) == before


def test_hash_follows_dockers_rules_for_character_classes(tmp_path):
    """`[ab]` is a class, as in Docker (the matcher this replaced took it literally)."""
    ctx = _context(tmp_path)
    (ctx / ".dockerignore").write_text("app/cache-[ab].bin\n")
    before = context_hash(ctx, {})
    (ctx / "app" / "cache-a.bin").write_bytes(b"\0")
    assert context_hash(ctx, {}) == before
    (ctx / "app" / "cache-c.bin").write_bytes(b"\0")
    assert context_hash(ctx, {}) != before


def test_hash_covers_renames_build_args_and_target(tmp_path):
    ctx = _context(tmp_path)
    before = context_hash(ctx, {})
    assert context_hash(ctx, {"BASE_IMAGE": "localhost/python:3.11"}) != before
    assert context_hash(ctx, {}, "greeter") != context_hash(ctx, {}, "books-api")
    (ctx / "app" / "main.py").rename(ctx / "app" / "other.py")
    assert context_hash(ctx, {}) != before


def test_allow_list_dockerignore_counts_only_what_it_lets_through(tmp_path):
    ctx = _context(tmp_path)
    (ctx / ".dockerignore").write_text("*\n!app/\n**/__pycache__\napp/gen_*.py\n")
    (ctx / "README.md").write_text("docs\n")
    before = context_hash(ctx, {})
    (ctx / "README.md").write_text("more docs\n")  # excluded by `*`
    (ctx / "app" / "gen_stub.py").write_text("generated\n")  # excluded again after `!app/`
    (ctx / "app" / "__pycache__").mkdir()
    (ctx / "app" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    assert context_hash(ctx, {}) == before
    (ctx / "app" / "main.py").write_text("print('changed')\n")  # re-included by `!app/`
    changed = context_hash(ctx, {})
    assert changed != before
    (ctx / "Dockerfile").write_text("FROM scratch\nUSER 10001\n")  # always sent to the daemon
    assert context_hash(ctx, {}) != changed


def test_pushed_images_run_by_digest_under_a_fixed_tag():
    run = deploy(PROFILES["kind"])
    for image in run.of_type(IMAGE):
        assert image.inputs["imageName"].endswith(f":{images.PUSHED_TAG}")
    assert "@sha256:" in run.container("greeter")["image"]


def test_unpushed_images_get_a_content_tag_that_is_stable_across_runs():
    """minikube (docker-env, no push): the node runs the tag, so it must change with the content."""
    first = {i.name: i.inputs["imageName"] for i in deploy(PROFILES["minikube"]).of_type(IMAGE)}
    second = {i.name: i.inputs["imageName"] for i in deploy(PROFILES["minikube"]).of_type(IMAGE)}
    assert first == second
    tags = {name: ref.split(":")[-1] for name, ref in first.items()}
    assert tags["image-books-api"] != tags["image-greeter"]
    assert images.PUSHED_TAG not in tags.values()


def test_base_image_reaches_the_build_and_the_tag():
    plain = deploy(PROFILES["minikube"]).one(IMAGE, "image-greeter").inputs
    based = deploy(PROFILES["minikube"] | {"baseImage": "localhost/python:3.11-slim"})
    inputs = based.one(IMAGE, "image-greeter").inputs
    assert inputs["build"]["args"] == {"BASE_IMAGE": "localhost/python:3.11-slim"}
    assert "args" not in plain["build"]
    assert inputs["imageName"] != plain["imageName"]


def test_extra_build_args_reach_both_builds():
    config = PROFILES["kind"] | {"imageBuildArgs": '["PIP_WHEELHOUSE=.offline/wheels"]'}
    run = deploy(config | {"baseImage": "localhost/python:3.11-slim"})
    for image in run.of_type(IMAGE):
        assert image.inputs["build"]["args"] == {
            "PIP_WHEELHOUSE": ".offline/wheels",
            "BASE_IMAGE": "localhost/python:3.11-slim",
        }


BOOKS_REF = "registry.example.com/ci/books-api@sha256:" + "a" * 64
GREETER_REF = "registry.example.com/ci/greeter:1.4.2"


def test_images_built_elsewhere_are_deployed_as_given_without_a_build():
    config = PROFILES["existing"] | {"booksApiImage": BOOKS_REF, "greeterImage": GREETER_REF}
    run = deploy(config, SECRET_KEYS)
    assert not run.of_type(IMAGE)
    assert run.container("books-api")["image"] == BOOKS_REF
    assert run.container("greeter")["image"] == GREETER_REF
    assert run.outputs["images"] == {"books-api": BOOKS_REF, "greeter": GREETER_REF}
    template = run.deployment("books-api")["spec"]["template"]["metadata"]
    assert template["annotations"]["consul-microservices/image-id"] == "sha256:" + "a" * 64


def test_one_image_given_builds_only_the_other():
    run = deploy(PROFILES["kind"] | {"greeterImage": GREETER_REF})
    assert [image.name for image in run.of_type(IMAGE)] == ["image-books-api"]
    assert run.container("greeter")["image"] == GREETER_REF
    assert run.container("books-api")["image"].startswith("localhost:5001/books-api@sha256:")


def test_no_registry_is_needed_when_every_image_is_given():
    config = PROFILES["existing"] | {
        "imageRegistry": "",
        "registryUsername": "",
        "registryPassword": "",
        "booksApiImage": BOOKS_REF,
        "greeterImage": GREETER_REF,
    }
    assert not deploy(config).of_type(IMAGE)


def test_the_local_stack_file_needs_only_the_images_built_elsewhere():
    """Pulumi.local.yaml with the images podman pushed (hack/local-stack.sh without the plugin):
    no build. Its Consul mode: test_infra_local_stack.py."""
    config = stack_config("local") | {"booksApiImage": BOOKS_REF, "greeterImage": GREETER_REF}
    run = deploy(config)
    assert not run.of_type(IMAGE)
    for service, ref in (("books-api", BOOKS_REF), ("greeter", GREETER_REF)):
        assert run.container(service)["image"] == ref


def test_a_change_in_one_service_leaves_the_others_context_alone(tmp_path):
    """Each target's context is the shared one less the other service (its own
    <service>.Dockerfile.dockerignore), as pulumi-docker hashes it: only the changed one
    rebuilds."""
    ctx = tmp_path / "services"
    shutil.copytree(
        images.SERVICES_DIR, ctx, symlinks=True, ignore=shutil.ignore_patterns(".offline")
    )
    before = {svc: context_hash(ctx, {}, svc) for svc in ("books-api", "greeter")}
    server = ctx / "greeter" / "src" / "greeter" / "server.py"
    server.write_text(server.read_text() + "# a one-line change in the greeter only\n")
    after = {svc: context_hash(ctx, {}, svc) for svc in ("books-api", "greeter")}
    assert after["books-api"] == before["books-api"]
    assert after["greeter"] != before["greeter"]
    shared = ctx / "common" / "src" / "service_common" / "logs.py"
    shared.write_text(shared.read_text() + "# shared code changes both\n")
    assert all(context_hash(ctx, {}, svc) != after[svc] for svc in after)
