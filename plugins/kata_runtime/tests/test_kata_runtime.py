"""The kata-firecracker runtime: the kctf plugin's Kubernetes code with the micro-VM profile, on kmock."""

import json
import pathlib

import pytest
import yaml

from ctfhost.plugin_api import LaunchError
from ctfhost_plugin_kata import DEFAULT_OVERHEAD_CPU, DEFAULT_OVERHEAD_MEMORY, DEFAULT_RUNTIME_CLASS
from ctfhost_plugin_kata import runtime as kata  # the registered KubernetesRuntime(KATA)
from ctfhost_plugin_kctf import runtime as kctf
from ctfhost_plugin_kctf.settings import SettingError
from ctfhost_plugin_kctf.testing import extra_config_errors, make_rows, namespace_of, validate_strict, waiting_status

RUNTIME_CLASS_MANIFEST = pathlib.Path(__file__).parents[3] / "deploy" / "kubernetes" / "runtimeclass-kata-fc.yaml"


def test_both_kubernetes_runtimes_are_installed(app):
    result = app.test_cli_runner().invoke(args=["ctfhost", "plugins", "--json"])
    assert result.exit_code == 0, result.output
    assert {"kctf", "kata-firecracker"} <= set(json.loads(result.output)["runtimes"])


def test_the_pod_runs_in_the_kata_runtime_class_without_nsjails_privileges(kube_cluster):
    challenge, instance, worker = make_rows("kata-firecracker", flag="flag{vm}")
    backend = kube_cluster.launch(kata, challenge, instance, worker)
    namespace = namespace_of(instance)
    assert backend.address == f"challenge.{namespace}.svc.cluster.local:1337"
    assert backend.probe is False

    objects = kube_cluster.objects(namespace=namespace)
    assert sorted(obj["kind"] for obj in objects) == [
        "Namespace", "NetworkPolicy", "NetworkPolicy", "NetworkPolicy", "Pod", "ResourceQuota", "Service",
    ]
    for obj in objects:
        validate_strict(obj)
        assert obj["metadata"]["labels"]["ctfhost.io/runtime"] == "kata-firecracker"
    ns = kube_cluster.one("Namespace", namespace)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"

    pod = kube_cluster.one("Pod", namespace)
    (container,) = pod["spec"]["containers"]
    assert pod["spec"]["runtimeClassName"] == "kata-fc"
    assert container["securityContext"] == {
        "readOnlyRootFilesystem": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert "annotations" not in pod["metadata"]  # no AppArmor unconfined
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["spec"]["enableServiceLinks"] is False
    assert container["readinessProbe"]["tcpSocket"] == {"port": 1337}
    assert {"name": "FLAG", "value": "flag{vm}"} in container["env"]


def test_the_runtime_class_is_configurable(app, kube_cluster, monkeypatch):
    monkeypatch.setitem(app.config, "CTFHOST_KATA_RUNTIME_CLASS", "kata-fc-large")
    challenge, instance, worker = make_rows("kata-firecracker")
    kube_cluster.launch(kata, challenge, instance, worker)
    assert kube_cluster.one("Pod", namespace_of(instance))["spec"]["runtimeClassName"] == "kata-fc-large"


@pytest.mark.parametrize(
    "overhead, quota",
    [
        # defaults = the shipped RuntimeClass: 250m and 160Mi on top of 2 CPUs and 1024Mi
        ({}, {"cpu": "2250m", "memory": "1184Mi"}),
        ({"CTFHOST_KATA_POD_OVERHEAD_CPU": "0.5", "CTFHOST_KATA_POD_OVERHEAD_MEMORY": "256Mi"},
         {"cpu": "2500m", "memory": "1280Mi"}),
        # a decimal megabyte overhead does not fall on a MiB boundary: bytes
        ({"CTFHOST_KATA_POD_OVERHEAD_CPU": "1", "CTFHOST_KATA_POD_OVERHEAD_MEMORY": "100M"},
         {"cpu": "3", "memory": str(1024 * 2**20 + 100 * 10**6)}),
    ],
)
def test_the_vm_gets_what_the_challenge_asked_for_and_the_quota_adds_the_overhead(
    app, kube_cluster, monkeypatch, overhead, quota
):
    for key, value in overhead.items():
        monkeypatch.setitem(app.config, key, value)
    challenge, instance, worker = make_rows("kata-firecracker", cpu_count=2, memory_mb=1024)
    kube_cluster.launch(kata, challenge, instance, worker)
    (container,) = kube_cluster.one("Pod", namespace_of(instance))["spec"]["containers"]
    # Kata sizes the micro-VM from the container's limits
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "1024Mi"},
        "limits": {"cpu": "2", "memory": "1024Mi"},
    }
    hard = kube_cluster.one("ResourceQuota", namespace_of(instance))["spec"]["hard"]
    assert {key: hard[key] for key in ("requests.cpu", "limits.cpu", "requests.memory", "limits.memory")} == {
        "requests.cpu": quota["cpu"], "limits.cpu": quota["cpu"],
        "requests.memory": quota["memory"], "limits.memory": quota["memory"],
    }


def test_a_quota_refusal_names_the_overhead_settings(kube_cluster):
    # what ResourceQuota admission answers when the cluster's RuntimeClass declares more overhead
    kube_cluster.refuse(
        "pods", 403, "Forbidden",
        'pods "challenge" is forbidden: exceeded quota: ctfhost, requested: limits.memory=1312Mi, '
        "used: limits.memory=0, limited: limits.memory=1184Mi",
    )
    challenge, instance, worker = make_rows("kata-firecracker", cpu_count=2, memory_mb=1024)
    with pytest.raises(LaunchError) as failure:
        kata.launch(challenge, instance, worker, 30)
    assert "exceeded quota: ctfhost" in str(failure.value)
    assert str(failure.value).endswith(
        "(the quota is the challenge's cpu and memory plus CTFHOST_KATA_POD_OVERHEAD_CPU and "
        "CTFHOST_KATA_POD_OVERHEAD_MEMORY: do they match the RuntimeClass overhead?)"
    )
    assert kube_cluster.objects() == []


@pytest.mark.parametrize(
    "key, value", [("CTFHOST_KATA_POD_OVERHEAD_CPU", "a lot"), ("CTFHOST_KATA_POD_OVERHEAD_MEMORY", "-5Mi")]
)
def test_an_overhead_that_is_not_a_quantity_is_named(app, kube_cluster, monkeypatch, key, value):
    monkeypatch.setitem(app.config, key, value)
    challenge, instance, worker = make_rows("kata-firecracker")
    with pytest.raises(SettingError, match=key):
        kata.launch(challenge, instance, worker, 30)
    assert kube_cluster.objects() == []


def test_the_shipped_runtime_class_declares_the_default_overhead():
    (manifest,) = [doc for doc in yaml.safe_load_all(RUNTIME_CLASS_MANIFEST.read_text()) if doc]
    validate_strict(manifest)
    assert manifest["kind"] == "RuntimeClass"
    assert manifest["metadata"]["name"] == DEFAULT_RUNTIME_CLASS
    assert manifest["overhead"]["podFixed"] == {"cpu": DEFAULT_OVERHEAD_CPU, "memory": DEFAULT_OVERHEAD_MEMORY}


def test_a_crash_looping_vm_fails_the_launch(kube_cluster):
    challenge, instance, worker = make_rows("kata-firecracker")
    with pytest.raises(LaunchError, match="^CrashLoopBackOff"):
        kube_cluster.launch(kata, challenge, instance, worker, waiting_status("CrashLoopBackOff"))
    assert kube_cluster.objects() == []


def test_each_runtime_reconciles_only_its_own_namespaces(kube_cluster):
    kata_rows = make_rows("kata-firecracker", worker_id="both-runtimes")
    kctf_rows = make_rows("kctf", worker_id="both-runtimes")
    kube_cluster.launch(kata, *kata_rows)
    kube_cluster.launch(kctf, *kctf_rows)
    worker = kata_rows[2]
    assert kctf.reconcile(worker, "kctf", [kctf_rows[1]]) == []
    assert kata.reconcile(worker, "kata-firecracker", [kata_rows[1]]) == []
    assert len(kube_cluster.objects("Namespace")) == 2
    assert kata.reconcile(worker, "kata-firecracker", []) == []
    assert [ns["metadata"]["name"] for ns in kube_cluster.objects("Namespace")] == [namespace_of(kctf_rows[1])]


def test_options_are_checked_for_kata_challenges(api):
    body = {"id": "web-vm", "name": "v", "runtime": "kata-firecracker", "image": "r/w:1", "port": 80,
            "extra_config": json.dumps({"cap_add": ["SYS_ADMIN"]})}
    (message,) = extra_config_errors(api, body)
    assert message.startswith("unknown key 'cap_add'; the kata-firecracker runtime accepts:")


def test_every_exposed_endpoint_is_a_service_of_its_own_in_front_of_its_micro_vm(kube_cluster):
    expose = [{"name": "admin", "port": 8080, "protocol": "http"}]
    services = {"db": {"image": "registry.example/db:2", "cpu_count": 1, "memory_mb": 512, "options": {},
                       "expose": [{"name": "dbwire", "port": 5432, "protocol": "tcp"}]}}
    challenge, instance, worker = make_rows("kata-firecracker", services=json.dumps(services),
                                            expose=json.dumps(expose))
    backend = kube_cluster.launch(kata, challenge, instance, worker)
    namespace = namespace_of(instance)
    assert {name: b.url for name, b in backend.endpoints.items()} == {
        "admin": f"http://endpoint-admin.{namespace}.svc.cluster.local:8080",
        "dbwire": f"tcp://endpoint-dbwire.{namespace}.svc.cluster.local:5432",
    }
    objects = kube_cluster.objects(namespace=namespace)
    for obj in objects:
        validate_strict(obj)
        if obj["kind"] == "Pod":
            assert obj["spec"]["runtimeClassName"] == "kata-fc"
    services_made = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "Service"}
    assert services_made["endpoint-dbwire"]["selector"] == {"app.kubernetes.io/component": "service",
                                                            "ctfhost.io/service": "db"}
    policies = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "NetworkPolicy"}
    assert [p["port"] for p in policies["allow-proxy"]["ingress"][0]["ports"]] == [1337, 8080]
    assert policies["allow-proxy-db"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 5432}]
    (db,) = next(o for o in objects if o["metadata"]["name"] == "service-db")["spec"]["containers"]
    assert db["readinessProbe"]["tcpSocket"] == {"port": 5432}
    hard = kube_cluster.one("ResourceQuota", namespace)["spec"]["hard"]
    assert (hard["pods"], hard["services"]) == ("2", "5")  # challenge, 2 endpoints, 2 headless
    kata.destroy(instance, worker)
    assert kube_cluster.objects() == []
