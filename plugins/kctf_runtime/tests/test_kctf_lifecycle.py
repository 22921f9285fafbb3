"""The kctf runtime driven by ctfhost's own lifecycle: REST rows, the launch job's service, destroy, reconcile."""

import json
import uuid

import pytest

from ctfhost.testing import Instance
from ctfhost.testing import lifecycle
from ctfhost_plugin_kctf.testing import validate_strict, waiting_status

pytestmark = pytest.mark.usefixtures("redis_server")


@pytest.fixture
def kube_worker(api, app, monkeypatch):
    """A registered worker serving kctf; the proxy check is off (no Traefik routes to a cluster here)."""
    monkeypatch.setitem(app.config, "CTFHOST_TRAEFIK_API_URL", None)
    worker_id = f"kube-{uuid.uuid4().hex[:8]}"
    response = api.post("/api/v1/workers", json={"id": worker_id, "address": "203.0.113.9", "runtime": "kctf"})
    assert response.status_code == 201, response.get_json()
    body = {
        "id": "pwn-kube", "name": "k", "runtime": "kctf", "image": "registry.example/pwn:1", "port": 1337,
        "cpu_count": 1, "memory_mb": 512, "flag_template": "flag{{{hex:16}}}",
        "extra_config": json.dumps({"readiness_timeout": 10}),
    }
    response = api.post("/api/v1/challenges", json=body)
    assert response.status_code == 201, response.get_json()
    return worker_id


def new_instance(api, team_id):
    response = api.post("/api/v1/instances", json={"team_id": team_id, "challenge_id": "pwn-kube"})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


@pytest.fixture
def nodes(kube_cluster):
    """Fake nodes for the pre-pull DaemonSets (a launch must not need them: it does not pre-pull)."""
    with kube_cluster.daemon_sets() as fake:
        yield fake


@pytest.mark.usefixtures("nodes")
def test_launch_destroy_and_reconcile_through_the_core(api, kube_cluster, kube_worker):
    instance_id = new_instance(api, 7)
    namespace = f"ctfhost-{instance_id}"
    kubelet = kube_cluster.when_pod_exists(namespace)
    assert lifecycle.launch(instance_id) == "running"
    kubelet.join()
    # no pre-pull inside a launch: the kubelet pulls the pod's image on its node (pull jobs pre-pull ahead)
    assert kube_cluster.objects("DaemonSet", "ctfhost-prepull") == []

    instance = Instance.get_by_id(instance_id)
    assert instance.backend == f"http://challenge.{namespace}.svc.cluster.local:1337"
    (container,) = kube_cluster.one("Pod", namespace)["spec"]["containers"]
    assert {"name": "FLAG", "value": instance.flag} in container["env"]
    assert instance.flag.startswith("flag{")
    for obj in kube_cluster.objects(namespace=namespace):
        validate_strict(obj)
        assert obj["metadata"]["labels"]["ctfhost.io/worker"] == kube_worker

    assert api.delete(f"/api/v1/instances/{instance_id}").status_code in (200, 202, 204)
    assert lifecycle.destroy(instance_id) is True
    assert kube_cluster.instance_objects() == []

    # reconcile: a running instance whose pod vanished is marked error; its namespace goes
    lost_id = new_instance(api, 8)
    kubelet = kube_cluster.when_pod_exists(f"ctfhost-{lost_id}")
    assert lifecycle.launch(lost_id) == "running"
    kubelet.join()
    kube_cluster.core_api().delete_namespaced_pod("challenge", f"ctfhost-{lost_id}")
    assert lifecycle.reconcile(kube_worker) == [lost_id]
    lost = Instance.get_by_id(lost_id)
    assert lost.status == "error" and "disappeared" in lost.error
    assert kube_cluster.instance_objects() == []


@pytest.mark.usefixtures("nodes")
def test_a_failing_pod_marks_the_instance_error_with_the_kubernetes_reason(api, kube_cluster, kube_worker):
    instance_id = new_instance(api, 9)
    status = waiting_status("ImagePullBackOff", 'Back-off pulling image "registry.example/pwn:1"')
    kubelet = kube_cluster.when_pod_exists(f"ctfhost-{instance_id}", status)
    assert lifecycle.launch(instance_id) == "error"
    kubelet.join()
    instance = Instance.get_by_id(instance_id)
    assert instance.error == 'ImagePullBackOff: Back-off pulling image "registry.example/pwn:1"'
    assert kube_cluster.instance_objects() == []
