"""The no-push image tag hashes what the build sees; pushed images run by digest."""

from __future__ import annotations

import shutil

from infra_harness import (
    CATALOG,
    IMAGE,
    PROFILES,
    SECRET_KEYS,
    SERVICES,
    deploy,
    infra_module,
    services_key,
    stack_config,
)

images = infra_module("images")
context_hash = images.context_hash


def _context(tmp_path):
    """A context with one service, `app`, whose Dockerfile is app/Dockerfile."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "app" / "main.py").write_text("print('hi')\n")
    (tmp_path / ".dockerignore").write_text("# comment\ntests/\n*.log\n")
    return tmp_path


def app_hash(ctx, build_args) -> str:
    return context_hash(ctx, build_args, "app")


def test_hash_is_stable_and_follows_content(tmp_path):
    ctx = _context(tmp_path)
    first = app_hash(ctx, {})
    assert first == app_hash(ctx, {})
    assert len(first) == 12
    (ctx / "app" / "main.py").write_text("print('bye')\n")
    assert app_hash(ctx, {}) != first


def test_hash_ignores_what_the_build_does_not_see(tmp_path):
    ctx = _context(tmp_path)
    before = app_hash(ctx, {})
    (ctx / "tests").mkdir()
    (ctx / "tests" / "test_x.py").write_text("x = 1\n")
    (ctx / "build.log").write_text("noise\n")
    assert app_hash(ctx, {}) == before


def test_hash_follows_dockers_rules_for_character_classes(tmp_path):
    """`[ab]` is a class, as in Docker (the matcher this replaced took it literally)."""
    ctx = _context(tmp_path)
    (ctx / ".dockerignore").write_text("app/cache-[ab].bin\n")
    before = app_hash(ctx, {})
    (ctx / "app" / "cache-a.bin").write_bytes(b"\0")
    assert app_hash(ctx, {}) == before
    (ctx / "app" / "cache-c.bin").write_bytes(b"\0")
    assert app_hash(ctx, {}) != before


def test_hash_covers_renames_and_build_args(tmp_path):
    ctx = _context(tmp_path)
    before = app_hash(ctx, {})
    assert app_hash(ctx, {"BASE_IMAGE": "localhost/python:3.11"}) != before
    assert app_hash(ctx, {"SERVICE": "greeter"}) != app_hash(ctx, {"SERVICE": "books-api"})
    (ctx / "app" / "main.py").rename(ctx / "app" / "other.py")
    assert app_hash(ctx, {}) != before


def test_allow_list_dockerignore_counts_only_what_it_lets_through(tmp_path):
    ctx = _context(tmp_path)
    (ctx / ".dockerignore").write_text("*\n!app/\n**/__pycache__\napp/gen_*.py\n")
    (ctx / "README.md").write_text("docs\n")
    before = app_hash(ctx, {})
    (ctx / "README.md").write_text("more docs\n")  # excluded by `*`
    (ctx / "app" / "gen_stub.py").write_text("generated\n")  # excluded again after `!app/`
    (ctx / "app" / "__pycache__").mkdir()
    (ctx / "app" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    assert app_hash(ctx, {}) == before
    (ctx / "app" / "main.py").write_text("print('changed')\n")  # re-included by `!app/`
    changed = app_hash(ctx, {})
    assert changed != before
    (ctx / "app" / "Dockerfile").write_text("FROM scratch\nUSER 10001\n")  # always sent
    assert app_hash(ctx, {}) != changed


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
    assert inputs["build"]["args"] == {
        "SERVICE": "greeter",
        "BASE_IMAGE": "localhost/python:3.11-slim",
    }
    assert plain["build"]["args"] == {"SERVICE": "greeter"}
    assert inputs["imageName"] != plain["imageName"]


def test_extra_build_args_reach_every_build():
    config = PROFILES["kind"] | {"imageBuildArgs": '["PIP_WHEELHOUSE=.offline/wheels"]'}
    run = deploy(config | {"baseImage": "localhost/python:3.11-slim"})
    for image in run.of_type(IMAGE):
        assert image.inputs["build"]["args"] == {
            "PIP_WHEELHOUSE": ".offline/wheels",
            "SERVICE": image.name.removeprefix("image-"),
            "BASE_IMAGE": "localhost/python:3.11-slim",
        }


BOOKS_REF = "registry.example.com/ci/books-api@sha256:" + "a" * 64
GREETER_REF = "registry.example.com/ci/greeter:1.4.2"
# Every service of the catalog built elsewhere: the tutorial's two by these references, any other
# by a digest of its own.
GIVEN_REFS = {
    s.name: f"registry.example.com/ci/{s.name}@sha256:" + "c" * 64 for s in CATALOG
} | {"books-api": BOOKS_REF, "greeter": GREETER_REF}  # fmt: skip
EVERY_GIVEN = services_key({name: {"image": ref} for name, ref in GIVEN_REFS.items()})


def test_images_built_elsewhere_are_deployed_as_given_without_a_build():
    config = PROFILES["existing"] | EVERY_GIVEN
    run = deploy(config, SECRET_KEYS)
    assert not run.of_type(IMAGE)
    assert run.container("books-api")["image"] == BOOKS_REF
    assert run.container("greeter")["image"] == GREETER_REF
    assert run.outputs["images"] == GIVEN_REFS
    template = run.deployment("books-api")["spec"]["template"]["metadata"]
    assert template["annotations"]["consul-microservices/image-id"] == "sha256:" + "a" * 64


def test_one_image_given_builds_only_the_other():
    run = deploy(PROFILES["kind"] | services_key({"greeter": {"image": GREETER_REF}}))
    assert [image.name for image in run.of_type(IMAGE)] == [
        f"image-{s.name}" for s in CATALOG if s.name != "greeter"
    ]
    assert run.container("greeter")["image"] == GREETER_REF
    assert run.container("books-api")["image"].startswith("localhost:5001/books-api@sha256:")


def test_no_registry_is_needed_when_every_image_is_given():
    config = PROFILES["existing"] | EVERY_GIVEN
    config |= {"imageRegistry": "", "registryUsername": "", "registryPassword": ""}
    assert not deploy(config).of_type(IMAGE)


def test_the_local_stack_file_needs_only_the_images_built_elsewhere():
    """Pulumi.local.yaml with the images podman pushed (hack/local-stack.sh without the plugin):
    no build. Its Consul mode: test_infra_local_stack.py."""
    config = stack_config("local") | EVERY_GIVEN
    run = deploy(config)
    assert not run.of_type(IMAGE)
    for service, ref in GIVEN_REFS.items():
        assert run.container(service)["image"] == ref


def test_a_change_in_one_service_leaves_the_others_context_alone(tmp_path):
    """Each service's context is the shared one less the other services (its folder's own
    Dockerfile.dockerignore), as pulumi-docker hashes it: only the changed one rebuilds."""
    ctx = tmp_path / "services"
    shutil.copytree(CATALOG.root, ctx, symlinks=True, ignore=shutil.ignore_patterns(".offline"))
    before = {svc: context_hash(ctx, {}, svc) for svc in SERVICES}
    server = ctx / "greeter" / "src" / "greeter" / "server.py"
    server.write_text(server.read_text() + "# a one-line change in the greeter only\n")
    after = {svc: context_hash(ctx, {}, svc) for svc in SERVICES}
    assert {svc for svc in SERVICES if after[svc] != before[svc]} == {"greeter"}
    shared = ctx / "common" / "src" / "service_common" / "logs.py"
    shared.write_text(shared.read_text() + "# shared code changes every service\n")
    assert all(context_hash(ctx, {}, svc) != after[svc] for svc in after)
