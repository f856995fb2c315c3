"""Every namespace the program creates enforces Pod Security and denies by default; a replicated
Deployment has a disruption budget."""

import pytest
import stack
from policykit import changed, stack_violations

NAMESPACE = "kubernetes:core/v1:Namespace"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
LABELS, DENY, BUDGETS = stack.POLICIES

APP = {"metadata": {"name": "app", "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
DENY_ALL = {
    "metadata": {"name": "default-deny", "namespace": "app"},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
}
WEB = {
    "metadata": {"name": "web", "namespace": "app"},
    "spec": {"replicas": 2.0, "template": {"metadata": {"labels": {"app": "web", "tier": "x"}}}},
}
WEB_BUDGET = {
    "metadata": {"name": "web", "namespace": "app"},
    "spec": {"selector": {"matchLabels": {"app": "web"}}},
}
COMPLIANT = [
    (NAMESPACE, "ns", APP),
    (NETPOL, "deny", DENY_ALL),
    (DEPLOYMENT, "web", WEB),
    (PDB, "web-pdb", WEB_BUDGET),
]


@pytest.mark.parametrize("policy", stack.POLICIES, ids=lambda p: p.name)
def test_a_compliant_stack_passes(policy):
    assert stack_violations(policy, COMPLIANT) == []


@pytest.mark.parametrize("level", [None, "privileged"])
def test_a_namespace_without_an_enforced_level_is_refused(level):
    labels = {"pod-security.kubernetes.io/enforce": level} if level else {}
    resources = [(NAMESPACE, "ns", {"metadata": {"name": "app", "labels": labels}})]
    assert stack_violations(LABELS, resources) == [
        f"Namespace 'ns': metadata.labels['pod-security.kubernetes.io/enforce'] is {level!r}; "
        "expected 'restricted' or 'baseline'"
    ]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("spec.podSelector", {"matchLabels": {"app": "web"}}),  # not every pod
        ("spec.policyTypes", ["Ingress"]),  # egress open
        ("spec.egress", [{}]),  # allows all egress
        ("metadata.namespace", "other"),  # another namespace's
    ],
)
def test_a_namespace_whose_policies_leave_a_gap_is_refused(path, value):
    resources = [(NAMESPACE, "ns", APP), (NETPOL, "deny", changed(DENY_ALL, path, value))]
    assert stack_violations(DENY, resources) == [
        "Namespace 'ns': no NetworkPolicy in namespace 'app' selects every pod and denies all "
        "ingress and egress; expected one"
    ]


def test_a_replicated_deployment_without_a_budget_is_refused():
    strangers = changed(WEB_BUDGET, "spec.selector.matchLabels", {"app": "api"})
    elsewhere = changed(WEB_BUDGET, "metadata.namespace", "other")
    for budgets in ([], [(PDB, "b", strangers)], [(PDB, "b", elsewhere)]):
        assert stack_violations(BUDGETS, [(DEPLOYMENT, "web", WEB), *budgets]) == [
            "Deployment 'web': 2 replicas and no PodDisruptionBudget selects its pods; expected "
            "one, so a node drain keeps it up"
        ]


def test_an_autoscaled_deployment_counts_its_minimum_and_a_single_replica_needs_no_budget():
    scaled = changed(WEB, "spec.replicas", None)
    hpa = {"spec": {"minReplicas": 3.0, "scaleTargetRef": {"kind": "Deployment", "name": "web"}}}
    found = stack_violations(BUDGETS, [(DEPLOYMENT, "web", scaled), (HPA, "hpa", hpa)])
    assert found and found[0].startswith("Deployment 'web': 3 replicas")
    single = changed(WEB, "spec.replicas", 1.0)
    assert stack_violations(BUDGETS, [(DEPLOYMENT, "web", single)]) == []
    assert stack_violations(BUDGETS, [(DEPLOYMENT, "web", scaled)]) == []
