"""Each pod policy passes a compliant Deployment and names the field of a violating one."""

import pods
import pytest
from policykit import changed, resource_violations

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
DIGEST = "sha256:" + "ab" * 32
CONTAINER = {
    "name": "web",
    "image": f"localhost:5001/web@{DIGEST}",
    "resources": {
        "requests": {"cpu": "50m", "memory": "96Mi", "ephemeral-storage": "32Mi"},
        "limits": {"cpu": "500m", "memory": "256Mi", "ephemeral-storage": "128Mi"},
    },
    "securityContext": {
        "runAsNonRoot": True,
        "runAsUser": 10001.0,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    },
}
COMPLIANT = {
    "metadata": {"name": "web", "namespace": "app"},
    "spec": {
        "replicas": 2.0,
        "template": {
            "metadata": {"labels": {"app.kubernetes.io/name": "web"}},
            "spec": {"automountServiceAccountToken": False, "containers": [CONTAINER]},
        },
    },
}
POD = "spec.template.spec"
SECURITY = f"{POD}.containers.0.securityContext"
BY_NAME = {policy.name: policy for policy in pods.POLICIES}

VIOLATIONS = [
    (
        "containers-run-as-non-root-uid",
        f"{SECURITY}.runAsNonRoot",
        False,
        "securityContext.runAsNonRoot is not true; expected true",
    ),
    (
        "containers-run-as-non-root-uid",
        f"{SECURITY}.runAsUser",
        0.0,
        "securityContext.runAsUser is 0.0; expected a numeric uid above 0",
    ),
    (
        "containers-run-as-non-root-uid",
        f"{SECURITY}.runAsUser",
        None,
        "securityContext.runAsUser is None; expected a numeric uid above 0",
    ),
    (
        "containers-read-only-root-filesystem",
        f"{SECURITY}.readOnlyRootFilesystem",
        False,
        "securityContext.readOnlyRootFilesystem is False; expected true",
    ),
    (
        "containers-no-privilege-escalation",
        f"{SECURITY}.allowPrivilegeEscalation",
        None,
        "securityContext.allowPrivilegeEscalation is None; expected false",
    ),
    (
        "containers-not-privileged",
        f"{SECURITY}.privileged",
        True,
        "securityContext.privileged is True; expected false or unset",
    ),
    (
        "containers-drop-all-capabilities",
        f"{SECURITY}.capabilities.drop",
        ["NET_RAW"],
        "securityContext.capabilities.drop is ['NET_RAW']; expected it to hold ALL",
    ),
    (
        "containers-drop-all-capabilities",
        f"{SECURITY}.capabilities.add",
        ["NET_ADMIN"],
        "securityContext.capabilities.add is ['NET_ADMIN']; expected none",
    ),
    (
        "containers-seccomp-runtime-default",
        f"{SECURITY}.seccompProfile.type",
        "Unconfined",
        "securityContext.seccompProfile.type is 'Unconfined'; expected 'RuntimeDefault'",
    ),
    (
        "containers-requests-and-limits",
        f"{POD}.containers.0.resources.limits.ephemeral-storage",
        None,
        "resources.limits.ephemeral-storage not set; expected cpu, memory and "
        "ephemeral-storage bounds",
    ),
    (
        "images-pinned",
        f"{POD}.containers.0.image",
        "localhost:5001/web:latest",
        "image is 'localhost:5001/web:latest'; expected a digest (name@sha256:...) or a "
        "content-hash tag, never latest or a bare name",
    ),
    (
        "images-pinned",
        f"{POD}.containers.0.image",
        "web",
        "image is 'web'; expected a digest (name@sha256:...) or a content-hash tag, never "
        "latest or a bare name",
    ),
]


@pytest.mark.parametrize("policy", pods.POLICIES, ids=lambda p: p.name)
def test_a_compliant_deployment_passes(policy):
    assert resource_violations(policy, DEPLOYMENT, COMPLIANT) == []


@pytest.mark.parametrize(("policy", "path", "value", "problem"), VIOLATIONS)
def test_a_violation_names_the_resource_the_container_and_the_field(policy, path, value, problem):
    found = resource_violations(BY_NAME[policy], DEPLOYMENT, changed(COMPLIANT, path, value))
    assert found == [f"Deployment 'subject': container 'web': {problem}"]


def test_every_container_policy_has_a_violation_here():
    tested = {policy for policy, *_ in VIOLATIONS}
    assert tested == set(BY_NAME) - {"pods-no-service-account-token"}


def test_init_containers_are_held_to_the_same_rules():
    init = {**CONTAINER, "name": "migrate", "securityContext": {}}
    props = changed(COMPLIANT, f"{POD}.initContainers", [init])
    found = resource_violations(BY_NAME["containers-read-only-root-filesystem"], DEPLOYMENT, props)
    assert found == [
        "Deployment 'subject': container 'migrate': securityContext.readOnlyRootFilesystem is "
        "None; expected true"
    ]


def test_the_pods_security_context_covers_the_fields_a_pod_may_set_for_all():
    props = changed(COMPLIANT, f"{SECURITY}.runAsUser", None)
    props = changed(props, f"{SECURITY}.seccompProfile", None)
    props = changed(
        props,
        f"{POD}.securityContext",
        {"runAsUser": 10001.0, "seccompProfile": {"type": "RuntimeDefault"}},
    )
    for name in ("containers-run-as-non-root-uid", "containers-seccomp-runtime-default"):
        assert resource_violations(BY_NAME[name], DEPLOYMENT, props) == []


@pytest.mark.parametrize(
    ("resource_type", "pod_path"),
    [
        ("kubernetes:core/v1:Pod", "spec"),
        ("kubernetes:apps/v1:StatefulSet", POD),
        ("kubernetes:batch/v1:Job", POD),
        ("kubernetes:batch/v1:CronJob", "spec.jobTemplate.spec.template.spec"),
    ],
)
def test_every_kind_of_workload_is_checked(resource_type, pod_path):
    spec = {"containers": [{**CONTAINER, "image": "nginx"}]}
    props: dict = {}
    node = props
    *parents, last = pod_path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = spec
    kind = resource_type.rsplit(":", 1)[1]
    found = resource_violations(BY_NAME["images-pinned"], resource_type, props)
    assert [m.split(":")[0] for m in found] == [f"{kind} 'subject'"]
    assert resource_violations(BY_NAME["pods-no-service-account-token"], resource_type, props)


def test_a_content_hash_tag_passes_and_an_allowed_tag_only_when_configured():
    policy = BY_NAME["images-pinned"]
    hashed = changed(COMPLIANT, f"{POD}.containers.0.image", "web:0123456789ab")
    assert resource_violations(policy, DEPLOYMENT, hashed) == []
    tagged = changed(COMPLIANT, f"{POD}.containers.0.image", "hashicorp/consul:1.22.3")
    assert len(resource_violations(policy, DEPLOYMENT, tagged)) == 1
    allowed = {"allowedTags": ["hashicorp/consul:1.22.3"]}
    assert resource_violations(policy, DEPLOYMENT, tagged, config=allowed) == []


@pytest.mark.parametrize("value", [True, None])
def test_a_pod_with_the_default_token_is_refused(value):
    props = changed(COMPLIANT, f"{POD}.automountServiceAccountToken", value)
    found = resource_violations(BY_NAME["pods-no-service-account-token"], DEPLOYMENT, props)
    assert found == [
        f"Deployment 'subject': automountServiceAccountToken is {value!r}; expected false (a "
        "pod that needs a token gets a projected one)"
    ]


def test_resources_that_run_no_pods_are_not_concerned():
    service = {"metadata": {"name": "web"}, "spec": {"type": "ClusterIP"}}
    for policy in pods.POLICIES:
        assert resource_violations(policy, "kubernetes:core/v1:Service", service) == []
