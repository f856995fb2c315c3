"""The app's pods: Pod Security "restricted", bounded resources, no API token, pinned images.

Each check looks at one container (with its pod spec, whose securityContext is the fallback for
the fields Kubernetes lets a pod set for all its containers) and says what is wrong, or nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from kube import containers, dig, named, pod_spec
from pulumi_policy import (
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

Check = Callable[[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]], str | None]
RESOURCE_NAMES = ("cpu", "memory", "ephemeral-storage")
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# The no-push path's tag: the first hex digits of a hash of everything the build sends.
CONTENT_HASH_TAG = re.compile(r":[0-9a-f]{12,64}$")


def _security(container: Mapping[str, Any], spec: Mapping[str, Any], field: str) -> Any:
    own = dig(container, "securityContext", field)
    return own if own is not None else dig(spec, "securityContext", field)


def _non_root_uid(container, spec, _config) -> str | None:
    uid = _security(container, spec, "runAsUser")
    if _security(container, spec, "runAsNonRoot") is not True:
        return "securityContext.runAsNonRoot is not true; expected true"
    # Numbers reach a policy as the wire's floats (10001.0).
    if isinstance(uid, bool) or not isinstance(uid, int | float) or uid < 1 or uid % 1:
        return f"securityContext.runAsUser is {uid!r}; expected a numeric uid above 0"
    return None


def _read_only_root(container, _spec, _config) -> str | None:
    value = dig(container, "securityContext", "readOnlyRootFilesystem")
    if value is not True:
        return f"securityContext.readOnlyRootFilesystem is {value!r}; expected true"
    return None


def _no_privilege_escalation(container, _spec, _config) -> str | None:
    value = dig(container, "securityContext", "allowPrivilegeEscalation")
    if value is not False:
        return f"securityContext.allowPrivilegeEscalation is {value!r}; expected false"
    return None


def _not_privileged(container, _spec, _config) -> str | None:
    value = dig(container, "securityContext", "privileged")
    if value:
        return f"securityContext.privileged is {value!r}; expected false or unset"
    return None


def _drop_all_capabilities(container, _spec, _config) -> str | None:
    dropped = dig(container, "securityContext", "capabilities", "drop") or []
    added = dig(container, "securityContext", "capabilities", "add") or []
    if "ALL" not in dropped:
        return f"securityContext.capabilities.drop is {list(dropped)!r}; expected it to hold ALL"
    if added:
        return f"securityContext.capabilities.add is {list(added)!r}; expected none"
    return None


def _seccomp_runtime_default(container, spec, _config) -> str | None:
    profile = _security(container, spec, "seccompProfile")
    kind = dig(profile, "type") if isinstance(profile, Mapping) else None
    if kind != "RuntimeDefault":
        return f"securityContext.seccompProfile.type is {kind!r}; expected 'RuntimeDefault'"
    return None


def _requests_and_limits(container, _spec, _config) -> str | None:
    missing = [
        f"resources.{side}.{resource}"
        for side in ("requests", "limits")
        for resource in RESOURCE_NAMES
        if dig(container, "resources", side, resource) in (None, "")
    ]
    if missing:
        return f"{', '.join(missing)} not set; expected cpu, memory and ephemeral-storage bounds"
    return None


def _pinned_image(container, _spec, config) -> str | None:
    image = container.get("image") or ""
    if DIGEST.search(image) or CONTENT_HASH_TAG.search(image):
        return None
    if image in config.get("allowedTags", ()):
        return None
    return (
        f"image is {image!r}; expected a digest (name@sha256:...) or a content-hash tag, "
        "never latest or a bare name"
    )


def _container_policy(name: str, description: str, check: Check, config_schema=None):
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        spec = pod_spec(args.resource_type, args.props)
        if spec is None:
            return
        config = args.get_config() or {}
        for container in containers(spec):
            problem = check(container, spec, config)
            if problem:
                where = named(args.resource_type, args.name)
                report_violation(f"{where}: container '{container.get('name')}': {problem}")

    return ResourceValidationPolicy(
        name=name, description=description, validate=validate, config_schema=config_schema
    )


def _no_service_account_token(
    args: ResourceValidationArgs, report_violation: ReportViolation
) -> None:
    spec = pod_spec(args.resource_type, args.props)
    if spec is not None and spec.get("automountServiceAccountToken") is not False:
        value = spec.get("automountServiceAccountToken")
        report_violation(
            f"{named(args.resource_type, args.name)}: automountServiceAccountToken is "
            f"{value!r}; expected false (a pod that needs a token gets a projected one)"
        )


POLICIES = [
    _container_policy(
        "containers-run-as-non-root-uid",
        "A container runs as a numeric uid other than 0, so a hostile image cannot run as root.",
        _non_root_uid,
    ),
    _container_policy(
        "containers-read-only-root-filesystem",
        "A container's root filesystem is read-only, so a compromise cannot change its code.",
        _read_only_root,
    ),
    _container_policy(
        "containers-no-privilege-escalation",
        "No process in a container gains more privileges than its parent (setuid, file caps).",
        _no_privilege_escalation,
    ),
    _container_policy(
        "containers-not-privileged",
        "No container is privileged: one would hold every capability and the host's devices.",
        _not_privileged,
    ),
    _container_policy(
        "containers-drop-all-capabilities",
        "A container drops every Linux capability and adds none back.",
        _drop_all_capabilities,
    ),
    _container_policy(
        "containers-seccomp-runtime-default",
        "A container runs under the runtime's default seccomp profile (Pod Security restricted).",
        _seccomp_runtime_default,
    ),
    _container_policy(
        "containers-requests-and-limits",
        "A container requests and is limited in cpu, memory and ephemeral storage, so one "
        "service cannot starve a node.",
        _requests_and_limits,
    ),
    _container_policy(
        "images-pinned",
        "A container's image is a digest or a content-hash tag, so what runs is what was "
        "reviewed; never latest or a bare name.",
        _pinned_image,
        config_schema=PolicyConfigSchema(
            properties={"allowedTags": {"type": "array", "items": {"type": "string"}}}
        ),
    ),
    ResourceValidationPolicy(
        name="pods-no-service-account-token",
        description="A pod gets no default ServiceAccount token: the API server is not its "
        "business.",
        validate=_no_service_account_token,
    ),
]
