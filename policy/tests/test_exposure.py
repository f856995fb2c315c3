"""Services stay inside the cluster unless configured; the Consul release manages its ACLs."""

import exposure
import pytest
from policykit import changed, resource_violations

SERVICE = "kubernetes:core/v1:Service"
RELEASE = "kubernetes:helm.sh/v3:Release"
NOT_EXPOSED, CONSUL_ACLS = exposure.POLICIES
CONSUL = {
    "chart": "consul",
    "values": {"global": {"acls": {"manageSystemACLs": True}}},
}


@pytest.mark.parametrize("service_type", [None, "ClusterIP"])
def test_a_cluster_ip_service_passes(service_type):
    props = {"spec": {"type": service_type} if service_type else {}}
    assert resource_violations(NOT_EXPOSED, SERVICE, props, name="web") == []


@pytest.mark.parametrize("service_type", ["NodePort", "LoadBalancer"])
def test_an_exposed_service_is_refused_unless_the_config_allows_it(service_type):
    props = {"spec": {"type": service_type}}
    assert resource_violations(NOT_EXPOSED, SERVICE, props, name="web") == [
        f"Service 'web': spec.type is '{service_type}'; expected ClusterIP (a service's Service "
        "is exposed on purpose when its manifest says exposed: true; any other, when this "
        "policy's allowedServices lists it)"
    ]
    allowed = {"allowedServices": ["web"]}
    assert resource_violations(NOT_EXPOSED, SERVICE, props, name="web", config=allowed) == []
    other = {"allowedServices": ["api"]}
    assert len(resource_violations(NOT_EXPOSED, SERVICE, props, name="web", config=other)) == 1


def service_of(name: str, service_type: str) -> dict:
    return {"metadata": {"labels": {exposure.SERVICE_LABEL: name}}, "spec": {"type": service_type}}


def test_a_service_whose_manifest_says_exposed_may_be_exposed_without_config():
    """The repo's catalog: books-api's manifest says exposed: true, the greeter's does not."""
    assert exposure.exposed_in_manifests() >= {"books-api"}
    assert "greeter" not in exposure.exposed_in_manifests()
    books = service_of("books-api", "LoadBalancer")
    assert resource_violations(NOT_EXPOSED, SERVICE, books, name="books-api-service") == []
    greeter = service_of("greeter", "NodePort")
    assert len(resource_violations(NOT_EXPOSED, SERVICE, greeter, name="greeter-service")) == 1


def test_the_manifests_are_read_from_the_catalog_folder(tmp_path):
    for name, exposed in (("front", "true"), ("back", "false"), ("side", None)):
        (tmp_path / name).mkdir()
        text = f"name: {name}\n" + (f"exposed: {exposed}\n" if exposed else "")
        (tmp_path / name / "service.yaml").write_text(text)
    (tmp_path / "not-a-service").mkdir()
    assert exposure.exposed_in_manifests(tmp_path) == {"front"}


@pytest.mark.parametrize("chart", ["consul", "/charts/consul", "/charts/consul-1.9.3.tgz"])
def test_the_consul_release_passes_with_managed_acls_from_any_source(chart):
    assert resource_violations(CONSUL_ACLS, RELEASE, {**CONSUL, "chart": chart}) == []
    props = changed({**CONSUL, "chart": chart}, "values.global.acls.manageSystemACLs", False)
    assert resource_violations(CONSUL_ACLS, RELEASE, props, name="consul") == [
        "Release 'consul': values.global.acls.manageSystemACLs is False; expected true "
        "(without ACLs any pod can register as any service)"
    ]


def test_a_release_without_acl_values_is_refused_and_other_charts_are_not_concerned():
    found = resource_violations(CONSUL_ACLS, RELEASE, {"chart": "consul", "values": {}})
    assert found == [
        "Release 'subject': values.global.acls.manageSystemACLs is None; expected true "
        "(without ACLs any pod can register as any service)"
    ]
    assert resource_violations(CONSUL_ACLS, RELEASE, {"chart": "consul-exporter"}) == []
