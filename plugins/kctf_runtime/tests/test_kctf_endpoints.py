"""Several exposed endpoints per instance on the Kubernetes runtimes: a Service and a proxy policy per endpoint."""

import ipaddress
import json
import uuid
from dataclasses import dataclass

import pytest

from ctfhost.plugin_api import LaunchError
from ctfhost.testing import Instance, InstanceEndpoint, lifecycle
from ctfhost_plugin_kctf import runtime as kctf
from ctfhost_plugin_kctf import settings as kube_settings
from ctfhost_plugin_kctf.manifests import KCTF, build
from ctfhost_plugin_kctf.testing import make_rows, namespace_of, validate_strict

# main serves 1337 (its port), an admin page on 8080 and a shell on 31337; `db` an admin page on 8081; `bot` nothing
EXPOSE = [{"name": "admin", "port": 8080, "protocol": "http"}, {"name": "shell", "port": 31337, "protocol": "tcp"}]
SERVICES = {
    "db": {"image": "registry.example/db:2", "cpu_count": 1, "memory_mb": 512, "options": {},
           "expose": [{"name": "dbadmin", "port": 8081, "protocol": "http"}]},
    "bot": {"image": "registry.example/bot:1", "cpu_count": 1, "memory_mb": 512, "options": {}, "expose": []},
}
MAIN_POD = {"app.kubernetes.io/component": "challenge"}
DB_POD = {"app.kubernetes.io/component": "service", "ctfhost.io/service": "db"}

PROXY_CIDRS = "198.51.100.0/24"
NODE_ADDRESS = "198.51.100.20"


@dataclass(frozen=True)
class Peer:
    """A client as NetworkPolicies see it: its address, its namespace's labels and its pod's labels."""

    address: str
    namespace_labels: dict
    pod_labels: dict


# Traefik as the default settings describe it: its pod in its namespace (service mode), its address (node-port mode)
PROXY = {
    "service": Peer("10.244.3.7", {"kubernetes.io/metadata.name": "traefik"}, {"app.kubernetes.io/name": "traefik"}),
    "nodeport": Peer("198.51.100.7", {}, {}),
}
# another instance's challenge pod
STRANGER = Peer("10.244.9.9", {"kubernetes.io/metadata.name": "ctfhost-other"}, MAIN_POD)


def rows(runtime="kctf", services=SERVICES, expose=EXPOSE, **changes):
    return make_rows(runtime, flag="flag{ports}", services=json.dumps(services), expose=json.dumps(expose), **changes)


def by_name(objects):
    return {obj["metadata"]["name"]: obj for obj in objects}


@pytest.fixture(params=["service", "nodeport"])
def mode(request, app, monkeypatch):
    """Both backend modes: cluster DNS names for a Traefik in the cluster, node ports for one outside it."""
    monkeypatch.setitem(app.config, "CTFHOST_K8S_BACKEND_MODE", request.param)
    monkeypatch.setitem(app.config, "CTFHOST_K8S_PROXY_CIDRS", PROXY_CIDRS if request.param == "nodeport" else None)
    monkeypatch.setitem(app.config, "CTFHOST_K8S_NODE_ADDRESS", NODE_ADDRESS)
    return request.param


# -- what the proxy may reach, read from the policies ------------------------------


def _selects(selector, labels):
    assert not selector.get("matchExpressions"), "this reading of policies knows matchLabels only"
    return all(labels.get(key) == value for key, value in (selector.get("matchLabels") or {}).items())


def _admits(rule_peer, client):
    if "ipBlock" in rule_peer:
        address = ipaddress.ip_address(client.address)
        block = rule_peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(cidr) for cidr in block.get("except", []))
    if "namespaceSelector" not in rule_peer:
        return False  # a podSelector alone selects pods of the policy's own namespace: the instance's, not the client's
    return _selects(rule_peer["namespaceSelector"], client.namespace_labels) and _selects(
        rule_peer.get("podSelector", {}), client.pod_labels)


def reaches(policies, pods, client):
    """{pod name: {(protocol, port)}} `client` (a Peer from outside the namespace) may open under the namespace's
    NetworkPolicies ("any": every port)."""
    reached = {}
    for pod in pods:
        ports = set()
        for policy in policies:
            spec = policy["spec"]
            if "Ingress" not in spec["policyTypes"] or not _selects(spec["podSelector"], pod["metadata"]["labels"]):
                continue
            for rule in spec.get("ingress", []):
                if "from" in rule and not any(_admits(peer, client) for peer in rule["from"]):
                    continue
                ports |= {(port["protocol"], port["port"]) for port in rule["ports"]} if "ports" in rule else {"any"}
        reached[pod["metadata"]["name"]] = ports
    return reached


# -- launch --------------------------------------------------------------------------


def test_each_endpoint_is_a_service_of_its_own_on_the_pod_that_serves_it(kube_cluster, mode):
    challenge, instance, worker = rows()
    backend = kube_cluster.launch(kctf, challenge, instance, worker)
    namespace = namespace_of(instance)
    objects = kube_cluster.objects(namespace=namespace)
    for obj in objects:
        validate_strict(obj)
        assert obj["metadata"]["labels"]["ctfhost.io/instance"] == instance.id
    services = by_name(o for o in objects if o["kind"] == "Service")
    assert sorted(services) == ["bot", "challenge", "db", "endpoint-admin", "endpoint-dbadmin", "endpoint-shell",
                                "main"]
    kind = "NodePort" if mode == "nodeport" else "ClusterIP"
    for name, selector, port in (("endpoint-admin", MAIN_POD, 8080), ("endpoint-shell", MAIN_POD, 31337),
                                 ("endpoint-dbadmin", DB_POD, 8081)):
        spec = services[name]["spec"]
        assert (spec["type"], spec["selector"]) == (kind, selector), name
        (entry,) = spec["ports"]
        assert {key: entry[key] for key in ("protocol", "port", "targetPort")} == {
            "protocol": "TCP", "port": port, "targetPort": port}, name
        assert ("nodePort" in entry) == (mode == "nodeport"), name
    assert services["challenge"]["spec"]["type"] == kind

    # one Backend per endpoint name, in the challenge's order, each at its own Service
    assert list(backend.endpoints) == ["admin", "shell", "dbadmin"]
    for name, port in (("admin", 8080), ("shell", 31337), ("dbadmin", 8081)):
        if mode == "nodeport":
            address = f"{NODE_ADDRESS}:{services[f'endpoint-{name}']['spec']['ports'][0]['nodePort']}"
        else:
            address = f"endpoint-{name}.{namespace}.svc.cluster.local:{port}"
        assert backend.endpoints[name].address == address, name
        assert backend.endpoints[name].probe is False  # the pods' readiness probes stand for it
    assert {name: b.scheme for name, b in backend.endpoints.items()} == {
        "admin": "http", "shell": "tcp", "dbadmin": "http"}
    if mode == "nodeport":
        assert backend.address == f"{NODE_ADDRESS}:{services['challenge']['spec']['ports'][0]['nodePort']}"
        assert len({b.address for b in [backend, *backend.endpoints.values()]}) == 4
    else:
        assert backend.address == f"challenge.{namespace}.svc.cluster.local:1337"
    assert (backend.scheme, backend.probe) == ("http", False)

    # the quota: the three endpoint Services beside `challenge` and the three headless ones
    hard = kube_cluster.one("ResourceQuota", namespace)["spec"]["hard"]
    assert (hard["services"], hard["services.nodeports"]) == ("7", "4" if mode == "nodeport" else "0")

    kctf.destroy(instance, worker)
    assert kube_cluster.objects() == []


def test_the_proxy_reaches_exactly_the_exposed_ports_of_the_pods_serving_them(kube_cluster, mode):
    challenge, instance, worker = rows()
    kube_cluster.launch(kctf, challenge, instance, worker)
    namespace = namespace_of(instance)
    policies = kube_cluster.objects("NetworkPolicy", namespace)
    names = sorted(p["metadata"]["name"] for p in policies)
    assert names == ["allow-dns", "allow-proxy", "allow-proxy-db", "allow-within-instance", "default-deny"]
    pods = kube_cluster.objects("Pod", namespace)
    assert reaches(policies, pods, PROXY[mode]) == {
        "challenge": {("TCP", 1337), ("TCP", 8080), ("TCP", 31337)},
        "service-db": {("TCP", 8081)},
        "service-bot": set(),
    }
    # no one else from outside the instance reaches any of them
    assert reaches(policies, pods, STRANGER) == {"challenge": set(), "service-db": set(), "service-bot": set()}
    proxy = by_name(policies)
    assert proxy["allow-proxy-db"]["spec"]["podSelector"] == {"matchLabels": DB_POD}
    assert proxy["allow-proxy-db"]["spec"]["ingress"][0]["from"] == proxy["allow-proxy"]["spec"]["ingress"][0]["from"]


def test_every_other_policy_is_the_one_without_endpoints(app, monkeypatch, mode):
    settings = kube_settings.load()
    challenge, instance, worker = rows()
    with_endpoints = build(KCTF, settings, challenge, instance, worker)
    challenge.services = json.dumps({name: {**spec, "expose": []} for name, spec in SERVICES.items()})
    challenge.expose = "[]"
    without = build(KCTF, settings, challenge, instance, worker)

    def others(objects):
        return [p for p in objects.policies if not p["metadata"]["name"].startswith("allow-proxy")]

    assert others(with_endpoints) == others(without)
    for obj in with_endpoints.all():
        validate_strict(obj)


def test_each_exposing_container_is_ready_on_its_first_exposed_port(kube_cluster):
    services = {**SERVICES, "db": {**SERVICES["db"], "expose": [
        {"name": "dbadmin", "port": 8081, "protocol": "http"}, {"name": "dbwire", "port": 5432, "protocol": "tcp"}]}}
    challenge, instance, worker = rows(services=services)
    backend = kube_cluster.launch(kctf, challenge, instance, worker)
    assert list(backend.endpoints) == ["admin", "shell", "dbadmin", "dbwire"]
    pods = by_name(kube_cluster.objects("Pod", namespace_of(instance)))
    (main,) = pods["challenge"]["spec"]["containers"]
    # main keeps its probe on its port; its other exposed ports are declared beside it
    assert main["readinessProbe"]["tcpSocket"] == {"port": 1337}
    assert [port["containerPort"] for port in main["ports"]] == [1337, 8080, 31337]
    (db,) = pods["service-db"]["spec"]["containers"]
    assert db["readinessProbe"] == {"tcpSocket": {"port": 8081}, "periodSeconds": 2, "timeoutSeconds": 1}
    assert db["ports"] == [{"containerPort": 8081, "protocol": "TCP"}, {"containerPort": 5432, "protocol": "TCP"}]
    (bot,) = pods["service-bot"]["spec"]["containers"]
    assert "readinessProbe" not in bot and "ports" not in bot  # nothing exposed: running is enough
    for pod in pods.values():
        validate_strict(pod)


def test_an_endpoint_service_without_a_node_port_fails_the_launch_naming_it(app, kube_cluster, monkeypatch):
    monkeypatch.setitem(app.config, "CTFHOST_K8S_BACKEND_MODE", "nodeport")
    monkeypatch.setitem(app.config, "CTFHOST_K8S_PROXY_CIDRS", PROXY_CIDRS)
    kube_cluster.withhold_node_ports("endpoint-dbadmin")
    challenge, instance, worker = rows()
    with pytest.raises(LaunchError) as failure:
        kube_cluster.launch(kctf, challenge, instance, worker)
    assert str(failure.value) == (f"Kubernetes assigned no node port to service {namespace_of(instance)}/"
                                  "endpoint-dbadmin (endpoint 'dbadmin')")
    assert kube_cluster.objects() == []


# -- challenges with one endpoint keep their objects ------------------------------------


@pytest.mark.parametrize("services", [{}, {name: {**spec, "expose": []} for name, spec in SERVICES.items()}],
                         ids=["one-container", "services-without-expose"])
def test_a_challenge_without_expose_gets_no_endpoint_service_or_policy(kube_cluster, mode, services):
    challenge, instance, worker = rows(services=services, expose=[])
    backend = kube_cluster.launch(kctf, challenge, instance, worker)
    assert backend.endpoints == {}
    namespace = namespace_of(instance)
    objects = kube_cluster.objects(namespace=namespace)
    services_made = sorted(o["metadata"]["name"] for o in objects if o["kind"] == "Service")
    assert services_made == (["bot", "challenge", "db", "main"] if services else ["challenge"])
    policies = by_name(o for o in objects if o["kind"] == "NetworkPolicy")
    assert not [name for name in policies if name.startswith("allow-proxy-")]
    assert policies["allow-proxy"]["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 1337}]
    hard = kube_cluster.one("ResourceQuota", namespace)["spec"]["hard"]
    assert (hard["services"], hard["services.nodeports"]) == (
        "4" if services else "1", "1" if mode == "nodeport" else "0")
    pods = by_name(o for o in objects if o["kind"] == "Pod")
    (main,) = pods["challenge"]["spec"]["containers"]
    assert main["ports"] == [{"name": "challenge", "containerPort": 1337, "protocol": "TCP"}]
    for name, pod in pods.items():
        if name != "challenge":
            (container,) = pod["spec"]["containers"]
            assert "readinessProbe" not in container and "ports" not in container


# -- through the core ---------------------------------------------------------------------


def test_the_core_records_a_backend_for_every_endpoint(app, api, redis_server, kube_cluster, monkeypatch):
    monkeypatch.setitem(app.config, "CTFHOST_TRAEFIK_API_URL", None)  # no Traefik routes to a cluster here
    worker_id = f"kube-{uuid.uuid4().hex[:8]}"
    assert api.post("/api/v1/workers", json={"id": worker_id, "address": "203.0.113.9", "runtime": "kctf"}
                    ).status_code == 201
    body = {"id": "web-kube", "name": "w", "runtime": "kctf", "image": "registry.example/web:1", "port": 1337,
            "expose": EXPOSE, "services": SERVICES, "extra_config": json.dumps({"readiness_timeout": 10})}
    response = api.post("/api/v1/challenges", json=body)
    assert response.status_code == 201, response.get_json()
    response = api.post("/api/v1/instances", json={"team_id": 7, "challenge_id": "web-kube"})
    assert response.status_code == 201, response.get_json()
    instance_id = response.get_json()["id"]
    namespace = f"ctfhost-{instance_id}"
    kubelet = kube_cluster.when_pod_exists(namespace)
    assert lifecycle.launch(instance_id) == "running", Instance.get_by_id(instance_id).error
    kubelet.join()

    recorded = {e.name: e.backend for e in InstanceEndpoint.select().where(InstanceEndpoint.instance_id == instance_id)}
    assert recorded == {
        "admin": f"http://endpoint-admin.{namespace}.svc.cluster.local:8080",
        "shell": f"tcp://endpoint-shell.{namespace}.svc.cluster.local:31337",
        "dbadmin": f"http://endpoint-dbadmin.{namespace}.svc.cluster.local:8081",
    }
    shown = api.get(f"/api/v1/instances/{instance_id}").get_json()
    assert [e["name"] for e in shown["endpoints"]] == ["main", "admin", "shell", "dbadmin"]

    assert api.delete(f"/api/v1/instances/{instance_id}").status_code in (200, 202, 204)
    assert lifecycle.destroy(instance_id) is True
    assert kube_cluster.instance_objects() == []


def test_a_service_named_like_an_endpoints_service_is_refused(api):
    body = {"id": "web-kube", "name": "w", "runtime": "kctf", "image": "registry.example/web:1", "port": 1337,
            "expose": EXPOSE, "services": {"endpoint-admin": {"image": "registry.example/x:1"}}}
    answer = api.post("/api/v1/challenges", json=body)
    assert answer.status_code == 422, answer.get_json()
    assert "'endpoint-admin' is the name of endpoint 'admin''s Service on the kctf runtime" in str(
        answer.get_json()["errors"])
    body["services"] = {"admin": {"image": "registry.example/x:1"}}  # a service may share an endpoint's name
    assert api.post("/api/v1/challenges", json=body).status_code == 201
