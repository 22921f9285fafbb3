"""The kctf runtime against kmock's Kubernetes emulator, over HTTP with the real kubernetes client."""

import json
import re
import socket
import threading
import time
import uuid

import pytest

from ctfhost.plugin_api import LaunchError, TransientError
from ctfhost.testing import run_jobs
from ctfhost_plugin_kctf import runtime as kctf  # the registered KubernetesRuntime(KCTF)
from ctfhost_plugin_kctf import settings as kube_settings
from ctfhost_plugin_kctf.manifests import KCTF, build, label_value
from ctfhost_plugin_kctf.settings import SettingError, parse_selector
from ctfhost_plugin_kctf.testing import (
    READY_STATUS,
    extra_config_errors,
    make_rows,
    namespace_of,
    validate_strict,
    waiting_status,
)


TIMEOUT = 30  # seconds the core would give the pod to become ready

LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")


def launched(cluster, challenge, instance, worker, status=None):
    return cluster.launch(kctf, challenge, instance, worker, status)


def kinds(objects):
    counts = {}
    for obj in objects:
        counts[obj["kind"]] = counts.get(obj["kind"], 0) + 1
    return counts


# -- launch ----------------------------------------------------------------------


def test_launch_creates_one_labelled_namespace_holding_everything(kube_cluster):
    options = {"env": {"MODE": "hard"}, "command": ["/bin/kctf_setup"], "args": ["--fast"]}
    challenge, instance, worker = make_rows("kctf", options, flag="flag{own}")
    backend = launched(kube_cluster, challenge, instance, worker)

    namespace = namespace_of(instance)
    assert backend.address == f"challenge.{namespace}.svc.cluster.local:1337"
    assert (backend.scheme, backend.probe) == ("http", False)
    objects = kube_cluster.objects()
    assert kinds(objects) == {"Namespace": 1, "ResourceQuota": 1, "NetworkPolicy": 3, "Service": 1, "Pod": 1}
    for obj in objects:
        validate_strict(obj)
        assert obj["metadata"]["labels"] | {
            "app.kubernetes.io/managed-by": "ctfhost",
            "ctfhost.io/runtime": "kctf",
            "ctfhost.io/instance": instance.id,
            "ctfhost.io/challenge": "pwn-kube",
            "ctfhost.io/team": "team-7",
            "ctfhost.io/worker": worker.id,
        } == obj["metadata"]["labels"], obj["kind"]

    ns = kube_cluster.one("Namespace", namespace)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert ns["metadata"]["annotations"]["ctfhost.io/team-id"] == "team-7"
    assert ns["metadata"]["annotations"]["ctfhost.io/hostname"] == instance.hostname

    pod = kube_cluster.one("Pod", namespace)
    spec = pod["spec"]
    (container,) = spec["containers"]
    assert container["image"] == "registry.example/pwn:1"
    # what kCTF's operator gives a challenge container (controllers/deployment/deployment.go)
    assert container["securityContext"] == {
        "capabilities": {"add": ["SYS_ADMIN"]},
        "readOnlyRootFilesystem": True,
        "seccompProfile": {"type": "Unconfined"},
        "appArmorProfile": {"type": "Unconfined"},
    }
    assert pod["metadata"]["annotations"] == {"container.apparmor.security.beta.kubernetes.io/challenge": "unconfined"}
    assert container["readinessProbe"]["tcpSocket"] == {"port": 1337}
    assert container["resources"] == {
        "requests": {"cpu": "1", "memory": "512Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert "runtimeClassName" not in spec
    assert {"name": "FLAG", "value": "flag{own}"} in container["env"]
    assert {"name": "MODE", "value": "hard"} in container["env"]
    assert (container["command"], container["args"]) == (["/bin/kctf_setup"], ["--fast"])
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert spec["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]

    service = kube_cluster.one("Service", namespace)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == {"app.kubernetes.io/component": "challenge"}
    assert service["spec"]["ports"] == [{"name": "challenge", "protocol": "TCP", "port": 1337, "targetPort": 1337}]
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "challenge"

    quota = kube_cluster.one("ResourceQuota", namespace)
    assert quota["spec"]["hard"] == {
        "requests.cpu": "1", "limits.cpu": "1", "requests.memory": "512Mi", "limits.memory": "512Mi",
        "pods": "1", "services": "1", "services.nodeports": "0", "services.loadbalancers": "0",
    }


def test_tcp_challenges_get_a_tcp_backend(kube_cluster):
    challenge, instance, worker = make_rows("kctf")
    challenge.protocol = "tcp"
    backend = launched(kube_cluster, challenge, instance, worker)
    assert backend.url == f"tcp://challenge.{namespace_of(instance)}.svc.cluster.local:1337"


def test_the_instance_flag_wins_over_a_static_flag_in_env(kube_cluster):
    challenge, instance, worker = make_rows("kctf", {"env": {"FLAG": "flag{static}"}}, flag="flag{own}")
    launched(kube_cluster, challenge, instance, worker)
    (container,) = kube_cluster.one("Pod", namespace_of(instance))["spec"]["containers"]
    assert [e for e in container["env"] if e["name"] == "FLAG"] == [{"name": "FLAG", "value": "flag{own}"}]

    challenge, instance, worker = make_rows("kctf")
    launched(kube_cluster, challenge, instance, worker)
    (container,) = kube_cluster.one("Pod", namespace_of(instance))["spec"]["containers"]
    assert container["env"] == []


def test_cpu_requests_can_be_a_fraction_of_the_limit(app, kube_cluster, monkeypatch):
    monkeypatch.setitem(app.config, "CTFHOST_K8S_CPU_REQUEST_RATIO", "0.25")
    challenge, instance, worker = make_rows("kctf", cpu_count=2, memory_mb=1024)
    launched(kube_cluster, challenge, instance, worker)
    (container,) = kube_cluster.one("Pod", namespace_of(instance))["spec"]["containers"]
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "1024Mi"},
        "limits": {"cpu": "2", "memory": "1024Mi"},
    }
    hard = kube_cluster.one("ResourceQuota", namespace_of(instance))["spec"]["hard"]
    assert (hard["requests.cpu"], hard["limits.cpu"]) == ("500m", "2")


# -- readiness -------------------------------------------------------------------


def test_launch_returns_only_once_the_pod_is_ready(app, kube_cluster):
    challenge, instance, worker = make_rows("kctf")
    namespace = namespace_of(instance)
    result = {}

    def launch():
        with app.app_context():
            try:
                result["backend"] = kctf.launch(challenge, instance, worker, TIMEOUT)
            except Exception as exc:  # reported below
                result["error"] = exc

    thread = threading.Thread(target=launch)
    thread.start()
    deadline = time.monotonic() + 10
    while not kube_cluster.objects("Pod", namespace) and time.monotonic() < deadline:
        time.sleep(0.01)
    kube_cluster.set_pod_status(namespace, waiting_status("ContainerCreating"))
    time.sleep(0.3)
    assert thread.is_alive(), result
    kube_cluster.set_pod_status(namespace, READY_STATUS)
    thread.join(10)
    assert not thread.is_alive()
    assert "error" not in result, result
    assert result["backend"].address.startswith(f"challenge.{namespace}.")


@pytest.mark.parametrize(
    "status, note",
    [
        (None, "the pod has no status yet"),
        (
            {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                                 "message": "0/3 nodes are available: 3 Insufficient cpu."}]},
            "Unschedulable: 0/3 nodes are available: 3 Insufficient cpu.",
        ),
        (waiting_status("ContainerCreating"), "ContainerCreating"),
    ],
)
def test_a_pod_that_never_becomes_ready_times_out_and_everything_is_deleted(kube_cluster, status, note):
    challenge, instance, worker = make_rows("kctf")
    kubelet = kube_cluster.when_pod_exists(namespace_of(instance), status) if status else None
    with pytest.raises(LaunchError) as failure:
        kctf.launch(challenge, instance, worker, 0.4)  # the core passes the challenge's readiness timeout
    if kubelet:
        kubelet.join()
    assert str(failure.value) == f"the pod did not become ready within 0.4 s ({note})"
    assert kube_cluster.objects() == []


TERMINATED = {
    "phase": "Running",
    "containerStatuses": [{
        "name": "challenge", "image": "i", "imageID": "", "ready": False, "restartCount": 0,
        "state": {"terminated": {"exitCode": 139, "reason": "Error", "message": "segmentation fault"}},
    }],
}
EVICTED = {"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}


@pytest.mark.parametrize(
    "status, reason",
    [
        (waiting_status("ImagePullBackOff", 'Back-off pulling image "registry.example/pwn:1"'),
         'ImagePullBackOff: Back-off pulling image "registry.example/pwn:1"'),
        (waiting_status("ErrImagePull", "rpc error: code = NotFound desc = manifest unknown"),
         "ErrImagePull: rpc error: code = NotFound desc = manifest unknown"),
        (waiting_status("CrashLoopBackOff", "back-off 10s restarting failed container=challenge", last_exit=1),
         "CrashLoopBackOff: back-off 10s restarting failed container=challenge (last exit: Error, exit code 1)"),
        (TERMINATED, "the container terminated (Error, exit code 139: segmentation fault)"),
        (EVICTED, "the pod failed: Evicted: The node was low on resource: memory."),
    ],
)
def test_a_failing_pod_fails_the_launch_at_once_with_the_kubernetes_reason(kube_cluster, status, reason):
    challenge, instance, worker = make_rows("kctf", {"readiness_timeout": 30})
    started = time.monotonic()
    with pytest.raises(LaunchError) as failure:
        launched(kube_cluster, challenge, instance, worker, status)
    assert str(failure.value) == reason
    assert time.monotonic() - started < 10
    assert kube_cluster.objects() == []


def test_a_refused_pod_fails_the_launch_with_the_api_message(kube_cluster):
    kube_cluster.refuse("pods", 403, "Forbidden", 'pods "challenge" is forbidden: violates PodSecurity "baseline"')
    challenge, instance, worker = make_rows("kctf")
    with pytest.raises(LaunchError) as failure:
        kctf.launch(challenge, instance, worker, TIMEOUT)
    assert str(failure.value) == (
        f"Kubernetes refused creating Pod {namespace_of(instance)}/challenge: "
        'pods "challenge" is forbidden: violates PodSecurity "baseline"'
    )
    assert kube_cluster.objects() == []


def test_a_fresh_quota_without_usage_is_waited_for(kube_cluster):
    # ResourceQuota admission refuses pods until the quota controller has counted a new quota
    kube_cluster.refuse("pods", 403, "Forbidden", "status unknown for quota: ctfhost, resources: limits.cpu", 2)
    challenge, instance, worker = make_rows("kctf")
    assert launched(kube_cluster, challenge, instance, worker).address.startswith("challenge.")


def test_api_server_errors_are_transient(kube_cluster):
    kube_cluster.refuse("services", 503, "ServiceUnavailable", "etcdserver: leader changed")
    challenge, instance, worker = make_rows("kctf")
    with pytest.raises(TransientError, match="etcdserver: leader changed"):
        kctf.launch(challenge, instance, worker, TIMEOUT)
    assert kube_cluster.objects() == []


def test_an_unreachable_api_is_transient(app, kube_cluster, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setitem(app.config, "CTFHOST_K8S_API_URL", f"http://127.0.0.1:{port}")
    challenge, instance, worker = make_rows("kctf")
    with pytest.raises(TransientError, match="cannot reach the Kubernetes API"):
        kctf.launch(challenge, instance, worker, TIMEOUT)


# -- leftovers, destroy, inspect -------------------------------------------------------


def test_a_second_launch_of_the_same_instance_replaces_the_first(kube_cluster):
    kube_cluster.run(setattr, kube_cluster.emulator, "terminating_seconds", 0.2)
    challenge, instance, worker = make_rows("kctf")
    launched(kube_cluster, challenge, instance, worker)
    first = kube_cluster.one("Namespace", namespace_of(instance))["metadata"]["uid"]
    launched(kube_cluster, challenge, instance, worker)
    assert kinds(kube_cluster.objects())["Pod"] == 1
    assert kube_cluster.one("Namespace", namespace_of(instance))["metadata"]["uid"] != first


def test_a_namespace_that_is_not_ours_is_left_alone(kube_cluster):
    challenge, instance, worker = make_rows("kctf")
    kube_cluster.core_api().create_namespace({"metadata": {"name": namespace_of(instance)}})
    with pytest.raises(LaunchError, match="already exists and does not belong to instance"):
        kctf.launch(challenge, instance, worker, TIMEOUT)
    kctf.destroy(instance, worker)  # as the core does after a failed launch
    assert [ns["metadata"]["name"] for ns in kube_cluster.objects("Namespace")] == [namespace_of(instance)]


def test_destroy_deletes_the_namespace_and_is_idempotent(kube_cluster):
    challenge, instance, worker = make_rows("kctf")
    launched(kube_cluster, challenge, instance, worker)
    kube_cluster.run(setattr, kube_cluster.emulator, "terminating_seconds", 0.3)
    assert kctf.destroy(instance, worker) is True
    assert kube_cluster.one("Namespace", namespace_of(instance))["status"]["phase"] == "Terminating"
    assert kctf.destroy(instance, worker) is True  # still terminating: 409, fine
    time.sleep(0.5)
    assert kube_cluster.objects() == []
    assert kctf.destroy(instance, worker) is True  # gone: 404, fine


def test_destroy_finds_namespaces_named_with_an_earlier_prefix(app, kube_cluster, monkeypatch):
    challenge, instance, worker = make_rows("kctf")
    launched(kube_cluster, challenge, instance, worker)
    monkeypatch.setitem(app.config, "CTFHOST_K8S_NAMESPACE_PREFIX", "ctf-")
    kctf.destroy(instance, worker)
    assert kube_cluster.objects() == []


def test_inspect_reports_the_pod_state(kube_cluster):
    challenge, instance, worker = make_rows("kctf")
    launched(kube_cluster, challenge, instance, worker)
    assert kctf.inspect(instance, worker).alive
    kube_cluster.set_pod_status(namespace_of(instance), waiting_status("CrashLoopBackOff", "back-off 20s"))
    state = kctf.inspect(instance, worker)
    assert (state.alive, state.reason) == (False, "CrashLoopBackOff: back-off 20s")
    kctf.destroy(instance, worker)
    assert kctf.inspect(instance, worker).reason == "the pod is gone"


def test_the_core_calls_kctf_only_for_its_runtime(app, api, redis_server, worker_id, kube_cluster):
    # another runtime's instance, launched and destroyed: kctf's hooks, which check no runtime name, never run
    body = {"id": "web-other", "name": "o", "runtime": "fake", "image": "fake/web", "port": 80}
    assert api.post("/api/v1/challenges", json=body).status_code == 201
    launched = api.post("/api/v1/instances", json={"team_id": 1, "challenge_id": "web-other"}).get_json()
    run_jobs(app, worker_id)
    assert api.get(f"/api/v1/instances/{launched['id']}").get_json()["status"] == "running"
    assert api.delete(f"/api/v1/instances/{launched['id']}").status_code in (200, 202, 204)
    run_jobs(app, worker_id)
    assert kube_cluster.requests() == []


# -- reconcile --------------------------------------------------------------------


def test_reconcile_deletes_orphans_and_reports_lost_pods(kube_cluster):
    worker_id = f"kube-{uuid.uuid4().hex[:6]}"
    rows = {name: make_rows("kctf", worker_id=worker_id) for name in ("kept", "orphan", "vanished", "crashing")}
    for challenge, instance, worker in rows.values():
        launched(kube_cluster, challenge, instance, worker)
    other_challenge, other_instance, other_worker = make_rows("kctf")  # another worker's
    launched(kube_cluster, other_challenge, other_instance, other_worker)
    _, pending, _ = make_rows("kctf", worker_id=worker_id)  # its launch has not created anything yet

    kube_cluster.core_api().delete_namespaced_pod("challenge", namespace_of(rows["vanished"][1]))
    kube_cluster.set_pod_status(namespace_of(rows["crashing"][1]), waiting_status("CrashLoopBackOff"))

    worker = rows["kept"][2]
    active = [rows[name][1] for name in ("kept", "vanished", "crashing")] + [pending]
    missing = kctf.reconcile(worker, "kctf", active)

    assert missing == sorted([rows["vanished"][1].id, rows["crashing"][1].id, pending.id])
    remaining = {ns["metadata"]["name"] for ns in kube_cluster.objects("Namespace")}
    assert remaining == {namespace_of(rows[name][1]) for name in ("kept", "vanished", "crashing")} | {
        namespace_of(other_instance)
    }
    assert not kube_cluster.objects(namespace=namespace_of(rows["orphan"][1]))


def test_odd_team_and_worker_ids_become_valid_labels_and_reconcile_still_finds_them(kube_cluster):
    worker_id = "worker." + "x" * 90 + "@rack 7"
    challenge, instance, worker = make_rows("kctf", worker_id=worker_id)
    instance.team_id = "Team.B_1@ctf:x"
    launched(kube_cluster, challenge, instance, worker)
    ns = kube_cluster.one("Namespace", namespace_of(instance))
    validate_strict(ns)
    assert ns["metadata"]["annotations"]["ctfhost.io/worker-id"] == worker_id
    assert ns["metadata"]["annotations"]["ctfhost.io/team-id"] == "Team.B_1@ctf:x"
    assert ns["metadata"]["labels"]["ctfhost.io/worker"] == label_value(worker_id)
    assert kctf.reconcile(worker, "kctf", []) == []
    assert kube_cluster.objects() == []


@pytest.mark.parametrize(
    "text", ["team-7", "7", "Team.B_1@ctf:x", "x" * 64, "-lead", "é", "a" * 200]
)
def test_label_values_are_valid_and_stable(text):
    value = label_value(text)
    assert value == label_value(text)
    assert len(value) <= 63
    assert LABEL_VALUE.fullmatch(value)
    if len(text) <= 63 and LABEL_VALUE.fullmatch(text):
        assert value == text


# -- network policies and backend modes ---------------------------------------------------


def test_network_policies_deny_all_but_the_proxy_in_and_dns_out(kube_cluster):
    challenge, instance, worker = make_rows("kctf")
    launched(kube_cluster, challenge, instance, worker)
    policies = {p["metadata"]["name"]: p["spec"] for p in kube_cluster.objects("NetworkPolicy")}
    assert policies == {
        "default-deny": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        "allow-proxy": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/component": "challenge"}},
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "traefik"}},
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "traefik"}},
                }],
                "ports": [{"protocol": "TCP", "port": 1337}],
            }],
        },
        "allow-dns": {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{
                "to": [{
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                }],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
            }],
        },
    }


def test_internet_egress_only_when_the_challenge_allows_it_and_never_to_private_ranges(app, kube_cluster, monkeypatch):
    monkeypatch.setitem(app.config, "CTFHOST_K8S_BLOCKED_CIDRS", "45.10.0.0/16, 2a01:4f8::/32")
    monkeypatch.setitem(app.config, "CTFHOST_K8S_PROXY_NAMESPACE_SELECTOR", '{"team": "infra"}')
    monkeypatch.setitem(
        app.config, "CTFHOST_K8S_PROXY_POD_SELECTOR",
        '{"matchExpressions": [{"key": "app", "operator": "In", "values": ["traefik", "haproxy"]}]}',
    )
    challenge, instance, worker = make_rows("kctf", {"internet": True})
    launched(kube_cluster, challenge, instance, worker)
    policies = {p["metadata"]["name"]: p["spec"] for p in kube_cluster.objects("NetworkPolicy")}
    for policy in kube_cluster.objects("NetworkPolicy"):
        validate_strict(policy)
    internet = policies["allow-internet"]
    assert internet["podSelector"] == {} and internet["policyTypes"] == ["Egress"]
    ipv4, ipv6 = (peer["ipBlock"] for peer in internet["egress"][0]["to"])
    assert ipv4["cidr"] == "0.0.0.0/0" and ipv6["cidr"] == "::/0"
    for private in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16",
                    "127.0.0.0/8", "45.10.0.0/16"):
        assert private in ipv4["except"]
    for private in ("fc00::/7", "fe80::/10", "::1/128", "2a01:4f8::/32"):
        assert private in ipv6["except"]
    assert policies["allow-proxy"]["ingress"][0]["from"] == [{
        "namespaceSelector": {"matchLabels": {"team": "infra"}},
        "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["traefik", "haproxy"]}]},
    }]


def test_nodeport_mode_publishes_a_node_port_on_the_node_address(app, kube_cluster, monkeypatch):
    monkeypatch.setitem(app.config, "CTFHOST_K8S_BACKEND_MODE", "nodeport")
    monkeypatch.setitem(app.config, "CTFHOST_K8S_NODE_ADDRESS", "198.51.100.20")
    monkeypatch.setitem(app.config, "CTFHOST_K8S_PROXY_CIDRS", "198.51.100.0/24,203.0.113.5")
    challenge, instance, worker = make_rows("kctf")
    backend = launched(kube_cluster, challenge, instance, worker)

    service = kube_cluster.one("Service", namespace_of(instance))
    validate_strict(service)
    assert service["spec"]["type"] == "NodePort"
    node_port = service["spec"]["ports"][0]["nodePort"]
    assert 30000 <= node_port <= 32767
    assert backend.address == f"198.51.100.20:{node_port}"
    assert (backend.scheme, backend.probe) == ("http", False)
    proxy = next(p for p in kube_cluster.objects("NetworkPolicy") if p["metadata"]["name"] == "allow-proxy")
    assert proxy["spec"]["ingress"][0]["from"] == [
        {"ipBlock": {"cidr": "198.51.100.0/24"}}, {"ipBlock": {"cidr": "203.0.113.5/32"}},
    ]
    assert kube_cluster.one("ResourceQuota", namespace_of(instance))["spec"]["hard"]["services.nodeports"] == "1"

    monkeypatch.setitem(app.config, "CTFHOST_K8S_NODE_ADDRESS", None)
    challenge, instance, worker = make_rows("kctf")
    assert launched(kube_cluster, challenge, instance, worker).address.startswith(f"{worker.address}:")


def test_nodeport_mode_needs_the_proxy_addresses(app, kube_cluster, monkeypatch):
    monkeypatch.setitem(app.config, "CTFHOST_K8S_BACKEND_MODE", "nodeport")
    challenge, instance, worker = make_rows("kctf")
    with pytest.raises(SettingError, match="CTFHOST_K8S_PROXY_CIDRS"):
        kctf.launch(challenge, instance, worker, TIMEOUT)
    assert kube_cluster.objects() == []


@pytest.mark.parametrize("mode", ["service", "nodeport"])
@pytest.mark.parametrize("options", [{}, {"internet": True, "env": {"A": "1"}, "command": ["/x"], "args": ["-y"]}])
def test_every_object_validates_strictly(app, monkeypatch, mode, options):
    monkeypatch.setitem(app.config, "CTFHOST_K8S_BACKEND_MODE", mode)
    monkeypatch.setitem(app.config, "CTFHOST_K8S_PROXY_CIDRS", "192.0.2.0/24")
    challenge, instance, worker = make_rows("kctf", options, flag="flag{x}", cpu_count=3, memory_mb=300)
    for obj in build(KCTF, kube_settings.load(), challenge, instance, worker).all():
        validate_strict(obj)


# -- configuration -------------------------------------------------------------------


def test_a_kubeconfig_context_reaches_the_cluster(app, kube_cluster, monkeypatch, tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "elsewhere",
        "clusters": [
            {"name": "ctf", "cluster": {"server": kube_cluster.url}},
            {"name": "nowhere", "cluster": {"server": "http://127.0.0.1:9"}},
        ],
        "users": [{"name": "worker", "user": {"token": "from-kubeconfig"}}],
        "contexts": [
            {"name": "ctf", "context": {"cluster": "ctf", "user": "worker"}},
            {"name": "elsewhere", "context": {"cluster": "nowhere", "user": "worker"}},
        ],
    }))
    monkeypatch.setitem(app.config, "CTFHOST_K8S_API_URL", None)
    monkeypatch.setitem(app.config, "CTFHOST_K8S_KUBECONFIG", str(kubeconfig))
    monkeypatch.setitem(app.config, "CTFHOST_K8S_CONTEXT", "ctf")
    challenge, instance, worker = make_rows("kctf")
    launched(kube_cluster, challenge, instance, worker)
    pod_requests = [headers for method, path, headers in kube_cluster.requests() if path.endswith("/pods")]
    assert pod_requests[0]["Authorization"] == "Bearer from-kubeconfig"


def test_a_token_file_is_read_again_when_it_rotates(app, kube_cluster, monkeypatch, tmp_path):
    token = tmp_path / "token"
    token.write_text("first\n")
    monkeypatch.setitem(app.config, "CTFHOST_K8S_TOKEN", None)
    monkeypatch.setitem(app.config, "CTFHOST_K8S_TOKEN_FILE", str(token))
    challenge, instance, worker = make_rows("kctf")
    launched(kube_cluster, challenge, instance, worker)
    token.write_text("second\n")
    kctf.destroy(instance, worker)
    sent = [headers.get("Authorization") for _, _, headers in kube_cluster.requests()]
    assert sent[0] == "Bearer first" and sent[-1] == "Bearer second"


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("CTFHOST_K8S_NAMESPACE_PREFIX", "CTF_", "CTFHOST_K8S_NAMESPACE_PREFIX"),
        ("CTFHOST_K8S_NAMESPACE_PREFIX", "x" * 28, "at most 27"),
        ("CTFHOST_K8S_BACKEND_MODE", "ingress", "use one of service, nodeport"),
        ("CTFHOST_K8S_PROXY_POD_SELECTOR", "{not json", "is not valid JSON"),
        ("CTFHOST_K8S_PROXY_POD_SELECTOR", "app", "write key=value"),
        ("CTFHOST_K8S_PROXY_CIDRS", "10.0.0.0/33", "CTFHOST_K8S_PROXY_CIDRS"),
        ("CTFHOST_K8S_CPU_REQUEST_RATIO", "2", "between 0.001 and 1"),
        ("CTFHOST_K8S_IMAGE_PULL_POLICY", "sometimes", "use one of Always"),
        ("CTFHOST_K8S_POLL_SECONDS", "soon", "is not a number"),
    ],
)
def test_settings_that_cannot_work_are_named(app, monkeypatch, key, value, message):
    monkeypatch.setitem(app.config, key, value)
    with pytest.raises(SettingError, match=message):
        kube_settings.load()


def test_selectors_read_json_or_key_value_pairs():
    assert parse_selector("X", "a=b, c=d") == {"matchLabels": {"a": "b", "c": "d"}}
    assert parse_selector("X", '{"a": "b"}') == {"matchLabels": {"a": "b"}}
    assert parse_selector("X", "{}") == {}
    expressions = {"matchExpressions": [{"key": "a", "operator": "Exists"}]}
    assert parse_selector("X", json.dumps(expressions)) == expressions


# -- challenge options -------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        ({"privileged": True}, "unknown key 'privileged'; the kctf runtime accepts: args, command, env, internet"),
        ({"cap_add": ["NET_ADMIN"]}, "unknown key 'cap_add'"),
        ({"env": {"A": 1}}, "env must be"),
        ({"env": {"A=B": "1"}}, "env must be"),
        ({"command": "/bin/sh -c x"}, "command must be a non-empty list of strings"),
        ({"args": []}, "args must be"),
        ({"internet": "yes"}, "internet must be true or false"),
    ],
)
def test_bad_options_are_named(api, options, message):
    body = {"id": "pwn-opts", "name": "o", "runtime": "kctf", "image": "r/p:1", "port": 1337,
            "extra_config": json.dumps(options)}
    errors = extra_config_errors(api, body)
    assert any(message in error for error in errors), errors


def test_options_are_checked_when_a_challenge_is_registered(api):
    body = {"id": "pwn-k", "name": "k", "runtime": "kctf", "image": "r/p:1", "port": 1337,
            "extra_config": json.dumps({"internet": True, "hostNetwork": True})}
    (message,) = extra_config_errors(api, body)
    assert "unknown key 'hostNetwork'" in message
    body["extra_config"] = json.dumps({"internet": True, "env": {"MODE": "x"}, "readiness_timeout": 90})
    assert api.post("/api/v1/challenges", json=body).status_code == 201


def test_check_runtime_needs_a_usable_configuration(app, monkeypatch, tmp_path):
    """A host without any Kubernetes configuration does not serve kctf; with one, it does."""
    worker = make_rows("kctf", worker_id="probe")[2]
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    monkeypatch.setenv("HOME", str(tmp_path))
    for key in [k for k in app.config if k.startswith("CTFHOST_K8S_")]:
        monkeypatch.delitem(app.config, key)
    reason = kctf.check_runtime("kctf", worker)
    assert reason and "no usable Kubernetes configuration" in reason
    monkeypatch.setitem(app.config, "CTFHOST_K8S_API_URL", "https://127.0.0.1:6443")
    monkeypatch.setitem(app.config, "CTFHOST_K8S_TOKEN", "t")
    assert kctf.check_runtime("kctf", worker) is None
