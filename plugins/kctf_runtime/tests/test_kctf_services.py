"""Challenges of several services on the Kubernetes runtimes (kctf, kata-firecracker), against kmock's emulator."""

import json

import pytest

from ctfhost.plugin_api import LaunchError
from ctfhost_plugin_kata import runtime as kata
from ctfhost_plugin_kctf import runtime as kctf
from ctfhost_plugin_kctf.testing import make_rows, namespace_of, validate_strict, waiting_status

SERVICES = {
    "db": {"image": "registry.example/db:2", "environment": {"POSTGRES_PASSWORD": "pw"}, "memory_mb": 1024,
           "cpu_count": 2, "expose": [], "options": {}},
    "bot": {"image": "registry.example/bot:1", "entrypoint": ["/bin/bot"], "command": ["--target", "http://main:1337/"],
            "cpu_count": 1, "memory_mb": 512, "expose": [], "options": {"env": {"MODE": "admin"}}},
}


def rows(runtime="kctf", services=None, **changes):
    return make_rows(runtime, flag="flag{three}", services=json.dumps(services or SERVICES), **changes)


def by_name(objects):
    return {obj["metadata"]["name"]: obj for obj in objects}


def test_each_service_is_a_pod_behind_a_service_of_its_name_in_the_instance_namespace(kube_cluster):
    challenge, instance, worker = rows()
    backend = kube_cluster.launch(kctf, challenge, instance, worker)
    namespace = namespace_of(instance)
    assert backend.address == f"challenge.{namespace}.svc.cluster.local:1337"  # players reach main, as before
    objects = kube_cluster.objects(namespace=namespace)
    for obj in objects:
        validate_strict(obj)
        assert obj["metadata"]["labels"]["ctfhost.io/instance"] == instance.id
    pods = by_name(o for o in objects if o["kind"] == "Pod")
    services = by_name(o for o in objects if o["kind"] == "Service")
    assert sorted(pods) == ["challenge", "service-bot", "service-db"]
    assert sorted(services) == ["bot", "challenge", "db", "main"]
    # by name: a headless Service per service, and `main` for the challenge's own pod
    assert services["main"]["spec"] == {"clusterIP": "None", "selector": {"app.kubernetes.io/component": "challenge"}}
    assert services["db"]["spec"]["clusterIP"] == "None"
    assert services["db"]["spec"]["selector"] == {"app.kubernetes.io/component": "service", "ctfhost.io/service": "db"}
    assert pods["service-db"]["metadata"]["labels"]["ctfhost.io/service"] == "db"

    (db,) = pods["service-db"]["spec"]["containers"]
    assert db["image"] == "registry.example/db:2"
    assert {"name": "FLAG", "value": "flag{three}"} in db["env"] and {"name": "POSTGRES_PASSWORD", "value": "pw"} in db["env"]
    assert db["resources"] == {"requests": {"cpu": "2", "memory": "1024Mi"}, "limits": {"cpu": "2", "memory": "1024Mi"}}
    # none of the privileges kCTF gives the nsjail container: Pod Security's restricted settings
    (main,) = pods["challenge"]["spec"]["containers"]
    assert "SYS_ADMIN" in str(main["securityContext"])
    assert db["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                     "seccompProfile": {"type": "RuntimeDefault"}}
    assert pods["service-db"]["spec"]["automountServiceAccountToken"] is False
    assert "annotations" not in pods["service-db"]["metadata"]  # no AppArmor unconfined
    assert pods["challenge"]["metadata"]["annotations"]["ctfhost.io/services"] == "db,bot"
    (bot,) = pods["service-bot"]["spec"]["containers"]
    assert (bot["command"], bot["args"]) == (["/bin/bot"], ["--target", "http://main:1337/"])  # ENTRYPOINT, CMD
    assert {"name": "MODE", "value": "admin"} in bot["env"] and {"name": "FLAG", "value": "flag{three}"} in bot["env"]

    quota = kube_cluster.one("ResourceQuota", namespace)["spec"]["hard"]
    assert quota | {} == quota and (quota["pods"], quota["services"]) == ("3", "4")
    assert (quota["limits.cpu"], quota["limits.memory"]) == ("4", "2048Mi")  # 1 + 2 + 1 CPUs, 512 + 1024 + 512 MiB


def test_the_pods_of_an_instance_reach_each_other_and_nothing_else_is_opened(kube_cluster):
    challenge, instance, worker = rows()
    kube_cluster.launch(kctf, challenge, instance, worker)
    policies = by_name(kube_cluster.objects("NetworkPolicy", namespace_of(instance)))
    assert sorted(policies) == ["allow-dns", "allow-proxy", "allow-within-instance", "default-deny"]
    within = policies["allow-within-instance"]["spec"]
    # podSelector {} without a namespaceSelector: pods of this namespace only (this instance)
    assert within == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                      "ingress": [{"from": [{"podSelector": {}}]}], "egress": [{"to": [{"podSelector": {}}]}]}
    # the proxy still reaches the challenge's own pod only
    assert policies["allow-proxy"]["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/component": "challenge"}}


def test_the_internet_is_each_pods_own_option(kube_cluster):
    services = {**SERVICES, "bot": {**SERVICES["bot"], "options": {"internet": True}}}
    challenge, instance, worker = rows(services=services)
    kube_cluster.launch(kctf, challenge, instance, worker)
    policies = by_name(kube_cluster.objects("NetworkPolicy", namespace_of(instance)))
    assert "allow-internet" not in policies and "allow-internet-main" not in policies
    bot = policies["allow-internet-bot"]["spec"]
    assert bot["podSelector"] == {"matchLabels": {"app.kubernetes.io/component": "service", "ctfhost.io/service": "bot"}}
    assert "10.0.0.0/8" in str(bot["egress"])  # never the private ranges
    # main's own option lets main out, and only main
    challenge, instance, worker = rows(extra_config=json.dumps({"internet": True}))
    kube_cluster.launch(kctf, challenge, instance, worker)
    policies = by_name(kube_cluster.objects("NetworkPolicy", namespace_of(instance)))
    assert policies["allow-internet-main"]["spec"]["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/component": "challenge"}}
    assert not [name for name in policies if name.startswith("allow-internet-") and name != "allow-internet-main"]


def test_a_single_container_challenge_is_unchanged(kube_cluster):
    challenge, instance, worker = make_rows("kctf")
    kube_cluster.launch(kctf, challenge, instance, worker)
    objects = kube_cluster.objects(namespace=namespace_of(instance))
    assert sorted((o["kind"], o["metadata"]["name"]) for o in objects if o["kind"] in ("Pod", "Service")) == [
        ("Pod", "challenge"), ("Service", "challenge")]
    assert "allow-within-instance" not in {o["metadata"]["name"] for o in objects if o["kind"] == "NetworkPolicy"}


def test_kata_runs_every_service_in_its_own_micro_vm_and_the_quota_adds_each_overhead(kube_cluster):
    challenge, instance, worker = rows("kata-firecracker")
    kube_cluster.launch(kata, challenge, instance, worker)
    namespace = namespace_of(instance)
    for pod in kube_cluster.objects("Pod", namespace):
        validate_strict(pod)
        assert pod["spec"]["runtimeClassName"] == "kata-fc"
    quota = kube_cluster.one("ResourceQuota", namespace)["spec"]["hard"]
    assert quota["pods"] == "3"
    # three pods: the containers' 4 CPUs and 2048 MiB plus three times the RuntimeClass overhead (250m, 160Mi)
    assert (quota["limits.cpu"], quota["limits.memory"]) == ("4750m", "2528Mi")


def test_a_failing_service_fails_the_launch_naming_it_and_everything_is_deleted(kube_cluster):
    challenge, instance, worker = rows()
    with pytest.raises(LaunchError) as failure:
        kube_cluster.launch(kctf, challenge, instance, worker,
                            status=waiting_status("CrashLoopBackOff", "back-off 10s restarting failed container"))
    assert str(failure.value).startswith("service 'db': CrashLoopBackOff")
    assert kube_cluster.objects() == []


def test_inspect_and_reconcile_see_a_failed_service(kube_cluster):
    challenge, instance, worker = rows()
    kube_cluster.launch(kctf, challenge, instance, worker)
    assert kctf.inspect(instance, worker).alive
    assert kctf.reconcile(worker, "kctf", [instance]) == []
    kube_cluster.set_pod_status(namespace_of(instance), waiting_status("CrashLoopBackOff", "back-off 20s"), "service-bot")
    state = kctf.inspect(instance, worker)
    assert (state.alive, state.reason) == (False, "service 'bot': CrashLoopBackOff: back-off 20s")
    assert kctf.reconcile(worker, "kctf", [instance]) == [instance.id]
    # a service pod deleted (evicted) is noticed too
    kube_cluster.core_api().delete_namespaced_pod("service-bot", namespace_of(instance))
    assert kctf.inspect(instance, worker).reason == "service 'bot': the pod is gone"
    assert kctf.reconcile(worker, "kctf", [instance]) == [instance.id]
    kctf.destroy(instance, worker)
    assert kube_cluster.objects(namespace=namespace_of(instance)) == []


@pytest.mark.parametrize("mode", ["service", "nodeport"])
def test_every_object_of_several_services_validates_strictly(app, monkeypatch, mode):
    from ctfhost_plugin_kctf import settings as kube_settings
    from ctfhost_plugin_kctf.manifests import KCTF, build

    monkeypatch.setitem(app.config, "CTFHOST_K8S_BACKEND_MODE", mode)
    monkeypatch.setitem(app.config, "CTFHOST_K8S_PROXY_CIDRS", "192.0.2.0/24")
    challenge, instance, worker = rows(extra_config=json.dumps({"internet": True}))
    objects = build(KCTF, kube_settings.load(), challenge, instance, worker).all()
    assert len([o for o in objects if o["kind"] == "Pod"]) == 3
    for obj in objects:
        validate_strict(obj)


def test_a_service_named_like_the_main_pods_service_is_refused(api):
    body = {"id": "pwn-kube", "name": "k", "runtime": "kctf", "image": "registry.example/pwn:1", "port": 1337,
            "services": {"challenge": {"image": "registry.example/x:1"}}}
    answer = api.post("/api/v1/challenges", json=body)
    assert answer.status_code == 422
    assert "'challenge' is the name of the main pod's Service" in str(answer.get_json()["errors"])
    body["services"] = {"db": {"image": "registry.example/db:1"}}
    assert api.post("/api/v1/challenges", json=body).status_code == 201
