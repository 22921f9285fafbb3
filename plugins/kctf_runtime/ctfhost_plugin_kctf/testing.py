"""pytest helpers for the Kubernetes runtimes: kmock's Kubernetes emulator over real HTTP, strict validation.

No cluster runs in tests. kmock's emulator stores what the real
``kubernetes`` client sends and answers like an API server; it runs on an
event loop in its own thread, so the plugins' blocking client calls and the
tests' own calls reach it over HTTP on 127.0.0.1 like a real API server.

kmock 0.8 handles namespaced objects by itself. Cluster-scoped namespaces
need help: its path parser raises on ``/api/v1/namespaces`` before any
reaction is matched (POST answers 500), and ``DELETE /api/v1/namespaces/NAME``
answers 404. :func:`cluster_emulator_class` answers the collection path
itself and adds reactions for the item path, keeps namespaces, deletes
what a deleted namespace held, refuses objects in a missing or terminating
namespace, and assigns cluster IPs and node ports to services. Like an API
server it gives every object it creates a ``metadata.uid``.

There is no controller: :meth:`KubeCluster.daemon_sets` runs a fake
DaemonSet controller and kubelet for the image pre-pull tests.
"""

import asyncio
import contextlib
import datetime
import itertools
import json
import re
import threading
import time
import uuid

import pytest

from ctfhost.testing import Challenge, Instance, Worker, need

from ctfhost_plugin_kctf.settings import DEFAULT_PREPULL_NAMESPACE

KUBERNETES_VERSION = "1.37.0"  # the schema version objects are validated against

READY_STATUS = {
    "phase": "Running",
    "conditions": [
        {"type": "PodScheduled", "status": "True"},
        {"type": "Initialized", "status": "True"},
        {"type": "ContainersReady", "status": "True"},
        {"type": "Ready", "status": "True"},
    ],
    "containerStatuses": [{
        "name": "challenge", "image": "challenge", "imageID": "", "ready": True, "restartCount": 0,
        "started": True, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
    }],
}


def waiting_status(reason, message="", last_exit=None):
    """A pod whose challenge container waits for `reason` (CrashLoopBackOff, ImagePullBackOff, ...)."""
    container = {
        "name": "challenge", "image": "challenge", "imageID": "", "ready": False, "restartCount": 3,
        "state": {"waiting": {"reason": reason, "message": message}},
    }
    if last_exit is not None:
        container["lastState"] = {"terminated": {"exitCode": last_exit, "reason": "Error"}}
    return {
        "phase": "Pending" if "Image" in reason else "Running",
        "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
        "containerStatuses": [container],
    }


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code, reason, message):
    import kmock

    return kmock.KubernetesError(status=code, reason=reason, message=message, details={})


def _selected(labels, selector):
    for term in filter(None, (part.strip() for part in (selector or "").split(","))):
        key, sep, value = term.partition("=")
        if key.endswith("!"):
            if labels.get(key[:-1]) == value:
                return False
        elif sep and labels.get(key) != value.lstrip("="):
            return False
        elif not sep and key not in labels:
            return False
    return True


def cluster_emulator_class():
    """kmock's KubernetesEmulator, taught namespaces, node ports and namespace lifecycles."""
    import attrs
    import kmock

    @attrs.define(kw_only=True)
    class ClusterEmulator(kmock.KubernetesEmulator):
        # seconds a deleted namespace stays Terminating (0: it is gone at once)
        terminating_seconds: float = 0.0
        namespaces: dict = attrs.field(factory=dict, init=False)
        # [plural, times left (-1: always), KubernetesError]: admission refusals, before anything is stored
        refusals: list = attrs.field(factory=list, init=False)
        # names of NodePort Services given no node port (as a cluster out of node ports would leave them)
        withheld_node_ports: set = attrs.field(factory=set, init=False)
        _node_ports: object = attrs.field(factory=lambda: itertools.count(30000), init=False)
        _cluster_ips: object = attrs.field(factory=lambda: itertools.count(10), init=False)

        def __attrs_post_init__(self):
            super().__attrs_post_init__()
            # a cluster-wide pod list answers [] before any pod exists, not 404
            self.resources["v1/pods"] = {}
            item = re.compile(r"/api/v1/namespaces/[^/]+")
            self["get", item] << self._read_namespace
            self["delete", item] << self._delete_namespace

        async def __call__(self, raw_request):
            if raw_request.path.rstrip("/") == "/api/v1/namespaces":
                import aiohttp.web

                try:
                    if raw_request.method == "POST":
                        body = self._create_namespace(await raw_request.json())
                        return aiohttp.web.json_response(body, status=201)
                    if raw_request.method == "GET":
                        return aiohttp.web.json_response(self._list_namespaces(raw_request.query.get("labelSelector")))
                    raise _status(405, "MethodNotAllowed", f"{raw_request.method} is not supported here")
                except kmock.KubernetesError as exc:
                    return await self._render_error(exc)
            return await super().__call__(raw_request)

        async def _handle(self, request):
            if request.action == kmock.action.CREATE:
                for refusal in self.refusals:
                    if refusal[0] == request.resource.plural and refusal[1] != 0:
                        refusal[1] -= 1
                        raise refusal[2]
            if request.action == kmock.action.CREATE and isinstance(request.data, dict):
                request.data.setdefault("metadata", {}).setdefault("uid", str(uuid.uuid4()))
            if request.action == kmock.action.CREATE and request.namespace:
                namespace = self.namespaces.get(request.namespace)
                if namespace is None:
                    raise _status(404, "NotFound", f'namespaces "{request.namespace}" not found')
                if namespace["status"]["phase"] == "Terminating":
                    raise _status(403, "Forbidden", f"unable to create new content in namespace "
                                                    f"{request.namespace} because it is being terminated")
                if request.resource.plural == "services" and isinstance(request.data, dict):
                    name = (request.data.get("metadata") or {}).get("name")
                    self._allocate(request.data.setdefault("spec", {}), name)
            return await super()._handle(request)

        def _allocate(self, spec, name):
            spec.setdefault("clusterIP", f"10.96.0.{next(self._cluster_ips) % 250 + 2}")
            if spec.get("type") == "NodePort" and name not in self.withheld_node_ports:
                for port in spec.get("ports", []):
                    port.setdefault("nodePort", next(self._node_ports))

        def _create_namespace(self, body):
            name = (body.get("metadata") or {}).get("name")
            if not name:
                raise _status(422, "Invalid", "metadata.name: Required value")
            if name in self.namespaces:
                raise _status(409, "AlreadyExists", f'namespaces "{name}" already exists')
            metadata = dict(body["metadata"], uid=str(uuid.uuid4()), creationTimestamp=_now(), resourceVersion="1")
            metadata["labels"] = dict(metadata.get("labels") or {}, **{"kubernetes.io/metadata.name": name})
            self.namespaces[name] = {
                "apiVersion": "v1", "kind": "Namespace", "metadata": metadata,
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"},
            }
            return self.namespaces[name]

        def _list_namespaces(self, selector):
            items = [ns for ns in self.namespaces.values() if _selected(ns["metadata"]["labels"], selector)]
            return {"apiVersion": "v1", "kind": "NamespaceList", "metadata": {"resourceVersion": "1"}, "items": items}

        def _read_namespace(self, request):
            name = request.namespace
            if name not in self.namespaces:
                raise _status(404, "NotFound", f'namespaces "{name}" not found')
            return self.namespaces[name]

        async def _delete_namespace(self, request):
            name = request.namespace
            namespace = self.namespaces.get(name)
            if namespace is None:
                raise _status(404, "NotFound", f'namespaces "{name}" not found')
            if namespace["status"]["phase"] == "Terminating":
                raise _status(409, "Conflict", f'Operation cannot be fulfilled on namespaces "{name}": The system '
                                               "is ensuring all content is removed from this namespace.")
            namespace["status"]["phase"] = "Terminating"
            namespace["metadata"]["deletionTimestamp"] = _now()
            if self.terminating_seconds:
                asyncio.get_running_loop().call_later(
                    self.terminating_seconds, lambda: asyncio.ensure_future(self._remove_namespace(name))
                )
            else:
                await self._remove_namespace(name)
            return namespace

        async def _remove_namespace(self, name):
            async with self._lock:
                for (_, namespace, _), obj in list(self.objects.items()):
                    if namespace == name and not obj.deleted:
                        obj.delete()
            self.namespaces.pop(name, None)

        def live(self):
            """Every object that exists now, as plain dicts (namespaces first)."""
            found = [json.loads(json.dumps(ns)) for ns in self.namespaces.values()]
            for (resource, _, _), obj in self.objects.items():
                if not obj.deleted:
                    found.append(dict(json.loads(json.dumps(obj.raw)), _plural=resource.plural))
            return found

    return ClusterEmulator


class KubeCluster:
    """The emulator on its own event loop thread, at ``url``, with helpers for tests."""

    def __init__(self, terminating_seconds=0.0):
        self.terminating_seconds = terminating_seconds
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kmock-emulator", daemon=True)
        self._stack = None

    def start(self):
        self.thread.start()
        self.call(self._enter())
        return self

    async def _enter(self):
        import kmock

        self._stack = contextlib.AsyncExitStack()
        self.emulator = await self._stack.enter_async_context(
            cluster_emulator_class()(terminating_seconds=self.terminating_seconds)
        )
        self.server = await self._stack.enter_async_context(kmock.Server(self.emulator))
        self.url = str(self.server.url).rstrip("/")

    def call(self, coroutine, timeout=30):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def run(self, function, *args):
        """Run a plain function on the emulator's loop (its state is not thread-safe)."""

        async def wrapper():
            return function(*args)

        return self.call(wrapper())

    def stop(self):
        if self._stack is not None:
            self.call(self._stack.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    # -- looking -------------------------------------------------------------

    def objects(self, kind=None, namespace=None):
        """Live objects (dicts), optionally of one kind and namespace."""
        found = self.run(self.emulator.live)
        return [
            obj for obj in found
            if (kind is None or obj.get("kind") == kind)
            and (namespace is None or obj["metadata"].get("namespace", obj["metadata"]["name"]) == namespace)
        ]

    def instance_objects(self):
        """Live objects outside the default pre-pull namespace (what launches and destroys touch)."""
        return [obj for obj in self.objects()
                if obj["metadata"].get("namespace", obj["metadata"]["name"]) != DEFAULT_PREPULL_NAMESPACE]

    def one(self, kind, namespace):
        (found,) = self.objects(kind, namespace)
        return found

    def refuse(self, plural, code, reason, message, times=-1):
        """Answer creations of `plural` with a Status, as an admission plugin would; -1: every time."""
        self.run(self.emulator.refusals.append, [plural, times, _status(code, reason, message)])

    def withhold_node_ports(self, *names):
        """Give the NodePort Services of these names no node port."""
        self.run(self.emulator.withheld_node_ports.update, names)

    def requests(self):
        """(method, path, headers) of every request kmock recorded."""
        return self.run(lambda: [(r.method.value, r.url.path, dict(r.headers)) for r in list(self.emulator)])

    # -- acting like the kubelet ----------------------------------------------

    def core_api(self):
        import kubernetes

        configuration = kubernetes.client.Configuration(host=self.url)
        return kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(configuration))

    def launch(self, runtime, challenge, instance, worker, status=None, timeout=30):
        """Call a runtime's launch hook while a fake kubelet marks the pod Ready (or gives it `status`)."""
        kubelet = self.when_pod_exists(namespace_of(instance), status)
        try:
            return runtime.launch(challenge, instance, worker, timeout)
        finally:
            kubelet.join()

    def daemon_sets(self, nodes=("node-a", "node-b"), pull=True):
        """A fake DaemonSet controller and kubelet while the `with` block runs (see :class:`FakeDaemonSets`)."""
        return FakeDaemonSets(self, nodes, pull)

    def set_pod_status(self, namespace, status, name="challenge"):
        """PATCH .../pods/NAME/status, as the kubelet would."""
        self.core_api().patch_namespaced_pod_status(name, namespace, {"status": status})

    def when_pod_exists(self, namespace, status=None, timeout=10):
        """In a thread: give each new pod (one without status) `status` (Ready by default), until the challenge's
        own pod (created last) has one, or the pods it gave one are gone (a failed launch deleted them), or
        `timeout`. Join the returned thread."""

        def kubelet():
            deadline = time.monotonic() + timeout
            given = set()
            while time.monotonic() < deadline:
                pods = self.objects("Pod", namespace)
                if "challenge" in given or (given and not pods):
                    return
                for pod in pods:
                    if not pod.get("status"):
                        self.set_pod_status(namespace, status or READY_STATUS, pod["metadata"]["name"])
                        given.add(pod["metadata"]["name"])
                time.sleep(0.01)

        thread = threading.Thread(target=kubelet, name="fake-kubelet", daemon=True)
        thread.start()
        return thread


class FakeDaemonSets:
    """A fake DaemonSet controller and kubelet, in a thread, for the pre-pull tests (a context manager).

    The emulator has no controller, so this one does what the real ones do,
    through the API: for every DaemonSet it sets ``status.desiredNumberScheduled``
    (the number of fake `nodes`) and creates one pod per node (named
    ``<daemon set>-<node>``, the template's labels, owned by the DaemonSet,
    ``spec.nodeName`` set, as if already scheduled); as each node's kubelet it
    then gives every pod without status the state of its init containers
    after the pull: terminated with exit code 0 and an ``imageID``, the main
    container running, or, for an image whose name holds "missing", waiting
    with ``ErrImagePull`` and a message worded like containerd's. With
    ``pull=False`` the pods get no status (a pull still under way). Pods of a
    deleted DaemonSet are deleted (the garbage collector's part). There is no
    rolling update: the pods of an updated DaemonSet keep their first template.
    """

    def __init__(self, cluster, nodes=("node-a", "node-b"), pull=True):
        self.cluster, self.nodes, self.pull = cluster, tuple(nodes), pull
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="fake-daemonsets", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stopped.set()
        self.thread.join(5)

    def _run(self):
        import kubernetes

        apps = kubernetes.client.AppsV1Api(kubernetes.client.ApiClient(
            kubernetes.client.Configuration(host=self.cluster.url)))
        core = self.cluster.core_api()
        while not self.stopped.wait(0.01):
            for action, args in self._actions(self.cluster.objects("DaemonSet"), self.cluster.objects("Pod")):
                try:
                    getattr(apps if action.endswith("daemon_set_status") else core, action)(*args)
                except kubernetes.client.ApiException as exc:
                    if exc.status not in (404, 409):  # deleted or made meanwhile, as with real controllers
                        raise

    def _actions(self, daemon_sets, pods):
        """(API method, arguments) of what the controller and the kubelets do next."""
        owners = {ds["metadata"]["uid"] for ds in daemon_sets}
        names = {(pod["metadata"]["namespace"], pod["metadata"]["name"]) for pod in pods}
        for ds in daemon_sets:
            meta = ds["metadata"]
            if (ds.get("status") or {}).get("desiredNumberScheduled") != len(self.nodes):
                yield "patch_namespaced_daemon_set_status", (meta["name"], meta["namespace"], {"status": {
                    "desiredNumberScheduled": len(self.nodes), "currentNumberScheduled": len(self.nodes),
                    "numberMisscheduled": 0, "numberReady": 0}})
            for node in self.nodes:
                if (meta["namespace"], f"{meta['name']}-{node}") not in names:
                    yield "create_namespaced_pod", (meta["namespace"], self._pod(ds, node))
        for pod in pods:
            meta = pod["metadata"]
            owned = [ref["uid"] for ref in meta.get("ownerReferences") or [] if ref["kind"] == "DaemonSet"]
            if owned and owned[0] not in owners:
                yield "delete_namespaced_pod", (meta["name"], meta["namespace"])
            elif owned and self.pull and not pod.get("status"):
                yield "patch_namespaced_pod_status", (meta["name"], meta["namespace"], {"status": self._status(pod)})

    @staticmethod
    def _pod(ds, node):
        template = ds["spec"]["template"]
        meta = ds["metadata"]
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": f"{meta['name']}-{node}", "namespace": meta["namespace"],
                "labels": dict(template["metadata"]["labels"]),
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": meta["name"],
                                     "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}],
            },
            "spec": dict(template["spec"], nodeName=node),
        }

    @staticmethod
    def _status(pod):
        init, main = pod["spec"]["initContainers"][0], pod["spec"]["containers"][0]
        if "missing" in init["image"]:
            reference = init["image"]
            message = (f'Failed to pull image "{reference}": rpc error: code = NotFound desc = failed to pull and '
                       f'unpack image "{reference}": failed to resolve reference "{reference}": {reference}: '
                       "not found")
            return {
                "phase": "Pending",
                "conditions": [{"type": "Initialized", "status": "False", "reason": "ContainersNotInitialized"}],
                "initContainerStatuses": [{
                    "name": init["name"], "image": reference, "imageID": "", "ready": False, "restartCount": 0,
                    "state": {"waiting": {"reason": "ErrImagePull", "message": message}},
                }],
                "containerStatuses": [{
                    "name": main["name"], "image": main["image"], "imageID": "", "ready": False, "restartCount": 0,
                    "state": {"waiting": {"reason": "PodInitializing"}},
                }],
            }
        digest = uuid.uuid5(uuid.NAMESPACE_URL, init["image"]).hex * 2
        return {
            "phase": "Running",
            "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
            "initContainerStatuses": [{
                "name": init["name"], "image": init["image"], "imageID": f"{init['image']}@sha256:{digest}",
                "ready": True, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
            }],
            "containerStatuses": [{
                "name": main["name"], "image": main["image"], "imageID": f"{main['image']}@sha256:{digest}",
                "ready": True, "restartCount": 0, "started": True,
                "state": {"running": {"startedAt": _now()}},
            }],
        }


def validate_strict(obj):
    """Check an object against the Kubernetes schema in strict mode (unknown fields are errors)."""
    try:
        import kubernetes_validate
    except ImportError:
        need(False, "kubernetes-validate is not installed: pip install 'ctfhost-plugin-kctf[test]'")
    from kubernetes.client import ApiClient

    data = ApiClient().sanitize_for_serialization(obj)
    data = {key: value for key, value in data.items() if not key.startswith("_")}
    kubernetes_validate.validate(data, KUBERNETES_VERSION, strict=True)
    return data


@pytest.fixture
def kube_cluster(app, monkeypatch):
    """A fresh emulator, and the CTFHOST_K8S_* settings that point the runtimes at it."""
    try:
        import kmock  # noqa: F401
    except ImportError:
        need(False, "kmock is not installed: pip install 'ctfhost-plugin-kctf[test]'")
    cluster = KubeCluster().start()
    settings = {
        "CTFHOST_K8S_API_URL": cluster.url,
        "CTFHOST_K8S_TOKEN": "test-token",
        "CTFHOST_K8S_POLL_SECONDS": "0.02",
        "CTFHOST_K8S_REQUEST_TIMEOUT": "5",
    }
    for key, value in settings.items():
        monkeypatch.setitem(app.config, key, value)
    yield cluster
    cluster.stop()


def namespace_of(instance):
    """The namespace of an instance under the default prefix."""
    return f"ctfhost-{instance.id}"


def extra_config_errors(api, body):
    """Register a challenge that must be refused; the messages about its extra_config."""
    response = api.post("/api/v1/challenges", json=body)
    assert response.status_code == 422, response.get_json()
    return response.get_json()["errors"]["json"]["extra_config"]


def make_rows(runtime, options=None, flag=None, worker_id=None, **changes):
    """An unsaved challenge, instance and worker for calling a runtime's hooks directly."""
    values = {
        "id": "pwn-kube", "name": "k", "runtime": runtime, "image": "registry.example/pwn:1", "port": 1337,
        "cpu_count": 1, "memory_mb": 512, "extra_config": json.dumps(options or {}),
    }
    challenge = Challenge(**(values | changes))
    instance = Instance(
        id=str(uuid.uuid4()), team_id="team-7", challenge_id=challenge.id, runtime=runtime,
        hostname=f"{uuid.uuid4().hex[:12]}.{challenge.id}.localhost", flag=flag,
    )
    worker = Worker(id=worker_id or f"kube-{uuid.uuid4().hex[:6]}", address="203.0.113.9", runtime=runtime)
    return challenge, instance, worker
