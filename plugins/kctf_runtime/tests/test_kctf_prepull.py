"""Image pre-pull on the Kubernetes runtimes (kctf, kata-firecracker): a DaemonSet per runtime and image.

kmock's emulator has no controllers, so :meth:`KubeCluster.daemon_sets`
(ctfhost_plugin_kctf.testing.FakeDaemonSets) plays the DaemonSet controller
and the kubelets of two fake nodes through the API: it sets the DaemonSet's
``status.desiredNumberScheduled`` to 2, creates one pod per node owned by the
DaemonSet, and gives each pod the init container status a kubelet reports
after the pull (terminated, exit code 0, an ``imageID``), or, for an image
whose name holds "missing", ``ErrImagePull`` with containerd's wording.
Everything the runtime creates is validated with kubernetes-validate --strict.
"""

import uuid

import pytest

from ctfhost.plugin_api import LaunchError
from ctfhost.testing import lifecycle, wait_until
from ctfhost_plugin_kata import runtime as kata
from ctfhost_plugin_kctf import runtime as kctf
from ctfhost_plugin_kctf.testing import make_rows, validate_strict

NAMESPACE = "ctfhost-prepull"
IMAGE = "registry.example/pwn:1"
MISSING = "registry.example/missing:1"


def worker_of(runtime="kctf"):
    return make_rows(runtime)[2]


def daemon_set(cluster):
    (found,) = cluster.objects("DaemonSet", NAMESPACE)
    return found


def test_prepare_image_creates_the_namespace_and_a_hardened_daemon_set(kube_cluster):
    worker = worker_of()
    with kube_cluster.daemon_sets():
        assert kctf.prepare_image("kctf", IMAGE, worker) is True

    namespace = kube_cluster.one("Namespace", NAMESPACE)
    validate_strict(namespace)
    assert namespace["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "ctfhost"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"

    ds = daemon_set(kube_cluster)
    validate_strict(ds)
    assert ds["metadata"]["name"].startswith("prepull-") and len(ds["metadata"]["name"]) == len("prepull-") + 12
    assert ds["metadata"]["annotations"]["ctfhost.io/image"] == IMAGE
    assert ds["metadata"]["labels"]["ctfhost.io/runtime"] == "kctf"
    spec = ds["spec"]["template"]["spec"]
    (pull,) = spec["initContainers"]
    (pause,) = spec["containers"]
    assert (pull["image"], pull["command"], pull["imagePullPolicy"]) == (IMAGE, ["sh", "-c", "exit 0"], "IfNotPresent")
    assert pause["image"] == "registry.k8s.io/pause:3.9"
    for container in (pull, pause):
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True,
            "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
        assert container["resources"] == {"requests": {"cpu": "1m", "memory": "8Mi"},
                                          "limits": {"cpu": "10m", "memory": "16Mi"}}
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert "runtimeClassName" not in spec and "tolerations" not in spec and "hostNetwork" not in spec
    # kept after the pull: its pods keep the image on the nodes, and on nodes that join later
    assert len(kube_cluster.objects("Pod", NAMESPACE)) == 2


def test_image_state_is_pulled_only_once_every_node_has_pulled(kube_cluster, app, monkeypatch):
    worker = worker_of()
    assert kctf.image_state("kctf", IMAGE, worker) is None  # no DaemonSet yet: the kubelet pulls for the pod
    monkeypatch.setitem(app.config, "CTFHOST_K8S_PREPULL_TIMEOUT_SECONDS", "0.3")
    with kube_cluster.daemon_sets(pull=False), pytest.raises(LaunchError) as late:
        kctf.prepare_image("kctf", IMAGE, worker)
    assert str(late.value).startswith(f"image {IMAGE!r} was not pulled on every node within 0.3 s (0 of 2 scheduled "
                                      "pods pulled")
    # the pods exist and no kubelet reported the pull yet
    assert len(kube_cluster.objects("Pod", NAMESPACE)) == 2
    assert kctf.image_state("kctf", IMAGE, worker) is None
    monkeypatch.setitem(app.config, "CTFHOST_K8S_PREPULL_TIMEOUT_SECONDS", "10")
    with kube_cluster.daemon_sets():
        assert kctf.prepare_image("kctf", IMAGE, worker) is True
    assert kctf.image_state("kctf", IMAGE, worker) == "pulled"
    # a node that joins: its pod has not pulled yet, so the image is not on every node
    with kube_cluster.daemon_sets(nodes=("node-a", "node-b", "node-c"), pull=False):
        wait_until(lambda: len(kube_cluster.objects("Pod", NAMESPACE)) == 3, 10, what="the new node's pod")
        assert kctf.image_state("kctf", IMAGE, worker) is None
    # the state is per runtime: kata has not pulled it
    assert kata.image_state("kata-firecracker", IMAGE, worker) is None


def test_image_state_is_two_reads(kube_cluster):
    worker = worker_of()
    with kube_cluster.daemon_sets():
        kctf.prepare_image("kctf", IMAGE, worker)
    before = len(kube_cluster.requests())
    assert kctf.image_state("kctf", IMAGE, worker) == "pulled"
    made = kube_cluster.requests()[before:]
    assert [(method, path.rsplit("/", 1)[-1]) for method, path, _ in made] == [
        ("GET", daemon_set(kube_cluster)["metadata"]["name"]), ("GET", "pods")]


def test_a_missing_image_fails_with_the_kubelets_message(kube_cluster):
    worker = worker_of()
    with kube_cluster.daemon_sets(), pytest.raises(LaunchError) as failed:
        kctf.prepare_image("kctf", MISSING, worker)
    message = str(failed.value)
    assert message.startswith(f"cannot pull image {MISSING!r}: node node-")
    assert f': ErrImagePull: Failed to pull image "{MISSING}": rpc error: code = NotFound' in message
    assert message.endswith(f"{MISSING}: not found")
    # its pods would retry the pull on every node: the DaemonSet goes, the next pull makes a new one
    assert kube_cluster.objects("DaemonSet", NAMESPACE) == []
    assert kctf.image_state("kctf", MISSING, worker) is None


def test_a_second_prepare_image_reuses_the_daemon_set(kube_cluster, app, monkeypatch):
    worker = worker_of()
    with kube_cluster.daemon_sets():
        assert kctf.prepare_image("kctf", IMAGE, worker) is True
        first = daemon_set(kube_cluster)
        assert kctf.prepare_image("kctf", IMAGE, worker) is True
        assert daemon_set(kube_cluster) == first  # the same object, not updated
        assert len(kube_cluster.objects("Pod", NAMESPACE)) == 2
        # another pause image: the same DaemonSet, its template updated
        monkeypatch.setitem(app.config, "CTFHOST_K8S_PREPULL_PAUSE_IMAGE", "registry.example/pause:3.10")
        assert kctf.prepare_image("kctf", IMAGE, worker) is True
    updated = daemon_set(kube_cluster)
    assert updated["metadata"]["uid"] == first["metadata"]["uid"]
    assert updated["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/pause:3.10"
    assert updated["metadata"]["annotations"]["ctfhost.io/spec-hash"] != first["metadata"]["annotations"][
        "ctfhost.io/spec-hash"]
    validate_strict(updated)
    # another image: a DaemonSet of its own beside it
    with kube_cluster.daemon_sets():
        assert kctf.prepare_image("kctf", "registry.example/web:2", worker) is True
    assert len(kube_cluster.objects("DaemonSet", NAMESPACE)) == 2


def test_a_prepull_namespace_of_the_settings_is_used(kube_cluster, app, monkeypatch):
    monkeypatch.setitem(app.config, "CTFHOST_K8S_PREPULL_NAMESPACE", "images")
    with kube_cluster.daemon_sets():
        assert kctf.prepare_image("kctf", IMAGE, worker_of()) is True
    assert len(kube_cluster.objects("DaemonSet", "images")) == 1
    assert kube_cluster.objects("Namespace", NAMESPACE) == []


def test_kata_pulls_with_its_runtime_class(kube_cluster):
    worker = worker_of("kata-firecracker")
    with kube_cluster.daemon_sets():
        assert kata.prepare_image("kata-firecracker", IMAGE, worker) is True
        assert kctf.prepare_image("kctf", IMAGE, worker) is True
    by_runtime = {ds["metadata"]["labels"]["ctfhost.io/runtime"]: ds for ds in kube_cluster.objects("DaemonSet")}
    assert sorted(by_runtime) == ["kata-firecracker", "kctf"]  # one per runtime and image
    kata_ds = by_runtime["kata-firecracker"]
    validate_strict(kata_ds)
    assert kata_ds["spec"]["template"]["spec"]["runtimeClassName"] == "kata-fc"
    assert kata_ds["metadata"]["name"] != by_runtime["kctf"]["metadata"]["name"]
    assert kata.image_state("kata-firecracker", IMAGE, worker) == "pulled"


# -- through the core ---------------------------------------------------------------------


@pytest.fixture
def kube_worker(api):
    worker_id = f"kube-{uuid.uuid4().hex[:8]}"
    response = api.post("/api/v1/workers", json={"id": worker_id, "address": "203.0.113.9", "runtime": "kctf"})
    assert response.status_code == 201, response.get_json()
    return worker_id


def pull_states(api, challenge_id):
    body = api.get(f"/api/v1/challenges/{challenge_id}/status").get_json()
    return {row["worker_id"]: (row["state"], row["error"]) for row in body["workers"]}


@pytest.mark.usefixtures("redis_server")
def test_the_core_records_pulled_and_failed(api, kube_cluster, kube_worker):
    for challenge_id, image in (("pwn-pulled", IMAGE), ("pwn-missing", MISSING)):
        body = {"id": challenge_id, "name": "k", "runtime": "kctf", "image": image, "port": 1337}
        assert api.post("/api/v1/challenges", json=body).status_code == 201
    with kube_cluster.daemon_sets():
        assert lifecycle.pull_image(kube_worker, "kctf", IMAGE) == "pulled"
        assert lifecycle.pull_image(kube_worker, "kctf", MISSING) == "failed"
    assert pull_states(api, "pwn-pulled")[kube_worker] == ("pulled", None)
    state, error = pull_states(api, "pwn-missing")[kube_worker]
    assert state == "failed"
    assert error.startswith(f"cannot pull image {MISSING!r}: node node-") and "ErrImagePull" in error
