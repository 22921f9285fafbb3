"""The hooks of a Kubernetes runtime: launch, inspect, destroy and reconcile instance namespaces.

One class serves both Kubernetes runtimes; a :class:`~ctfhost_plugin_kctf.manifests.Profile`
says how its pods are isolated and sized (``kctf``: nsjail in a pod;
``kata-firecracker``: a micro-VM per pod).
"""

import logging
import time

from kubernetes.client import ApiException

from ctfhost.plugin_api import Backend, LaunchError, RuntimeState, hookimpl

from ctfhost_plugin_kctf import prepull
from ctfhost_plugin_kctf import settings as kube_settings
from ctfhost_plugin_kctf.client import API_ERRORS, Kube, api_client, error_message, translate
from ctfhost_plugin_kctf.manifests import (
    COMPONENT_LABEL,
    INSTANCE_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    NAME,
    POD_SELECTOR,
    SERVICE_COMPONENT,
    SERVICE_LABEL,
    build,
    common_labels,
    endpoint_service_name,
    expected_services,
    namespace_name,
    selector,
)
from ctfhost_plugin_kctf.options import KubeOptions
from ctfhost_plugin_kctf.podstate import pod_state

log = logging.getLogger(__name__)


class KubernetesRuntime:
    """A ctfhost runtime whose instances are namespaces holding one pod (one per service of a challenge of several),
    its Services (one per exposed endpoint) and its policies."""

    def __init__(self, profile):
        self.profile = profile

    def __repr__(self):
        return f"<KubernetesRuntime {self.profile.runtime}>"

    # -- hooks -------------------------------------------------------------
    # The core calls them only for this profile's runtime: none checks the name.

    @hookimpl
    def register_runtimes(self):
        return [self.profile.runtime]

    @hookimpl
    def check_runtime(self, runtime, worker):
        try:
            api_client()  # a usable configuration: in-cluster, kubeconfig or CTFHOST_K8S_*
        except kube_settings.SettingError as exc:
            return str(exc)
        return None

    @hookimpl
    def runtime_options(self, runtime):
        return KubeOptions

    @hookimpl
    def validate_challenge(self, challenge):
        # a service's headless Service shares the namespace with `challenge` and the `endpoint-<name>` Services
        specs = challenge.service_specs
        problems = []
        if NAME in specs:
            problems.append(f"{NAME!r} is the name of the main pod's Service on the {self.profile.runtime} "
                            "runtime: name the service otherwise")
        for endpoint in challenge.endpoint_specs:
            taken = endpoint_service_name(endpoint["name"])
            if taken in specs:
                problems.append(f"{taken!r} is the name of endpoint {endpoint['name']!r}'s Service on the "
                                f"{self.profile.runtime} runtime: name the service or the endpoint otherwise")
        return {"services": problems} if problems else None

    @hookimpl
    def launch(self, challenge, instance, worker, timeout):
        settings = kube_settings.load()
        objects = build(self.profile, settings, challenge, instance, worker)
        deadline = time.monotonic() + timeout
        kube = Kube(settings)
        # someone else's namespace of the same name must survive our failure
        self._create_namespace(kube, objects, instance.id, settings, deadline)
        try:
            services = {}  # name -> the Service as created (a node port read back from it)
            for manifest in objects.in_namespace():
                created = self._create(kube, manifest, settings, deadline)
                if manifest["kind"] == "Service":
                    services[manifest["metadata"]["name"]] = created
            for pod_name, service_name in objects.pod_names():
                self._wait_ready(kube, objects.name, settings, deadline, timeout, pod_name,
                                 "" if pod_name == NAME else f"service {service_name!r}: ")
            address = self._address(settings, objects.name, services, NAME, challenge.port, worker)
            # Ready already means the port accepts connections (the readiness
            # probe), and the worker often cannot reach a cluster address at all.
            endpoints = {
                endpoint["name"]: Backend(
                    self._address(settings, objects.name, services, endpoint_service_name(endpoint["name"]),
                                  endpoint["port"], worker, f" (endpoint {endpoint['name']!r})"),
                    scheme=endpoint["protocol"], probe=False)
                for endpoint in challenge.endpoint_specs
            }
        except Exception:
            self._delete_quietly(kube, objects.name)
            raise
        scheme = "tcp" if getattr(challenge, "protocol", "http") == "tcp" else "http"
        return Backend(address, scheme=scheme, probe=False, endpoints=endpoints)

    @hookimpl
    def inspect(self, instance, worker):
        settings = kube_settings.load()
        try:
            pod = Kube(settings).read_pod(namespace_name(settings, instance.id), NAME)
        except API_ERRORS as exc:
            raise translate(exc, "reading the pod") from None
        if pod is None:
            return RuntimeState(False, "the pod is gone")
        state = pod_state(pod)
        if state.failure:
            return RuntimeState(False, state.failure)
        # a challenge of several services (the pod names them): the first of its other pods failed or gone names
        # the instance's state
        expected = expected_services(pod)
        if not expected:
            return RuntimeState(True)
        try:
            others = Kube(settings).list_pods(selector({MANAGED_BY_LABEL: MANAGED_BY, INSTANCE_LABEL: instance.id,
                                                        COMPONENT_LABEL: SERVICE_COMPONENT}))
        except API_ERRORS as exc:
            raise translate(exc, "reading the pods") from None
        found = {(other.metadata.labels or {}).get(SERVICE_LABEL): other for other in others}
        for service in expected:
            if service not in found:
                return RuntimeState(False, f"service {service!r}: the pod is gone")
            failure = pod_state(found[service]).failure
            if failure:
                return RuntimeState(False, f"service {service!r}: {failure}")
        return RuntimeState(True)

    @hookimpl
    def destroy(self, instance, worker):
        settings = kube_settings.load()
        kube = Kube(settings)
        labels = {MANAGED_BY_LABEL: MANAGED_BY, INSTANCE_LABEL: instance.id}
        try:
            # found by label, not by name: a namespace of that name that is not
            # ours stays, and one named under an earlier prefix goes too
            for namespace in kube.list_namespaces(selector(labels)):
                if _matches(namespace, labels):
                    kube.delete_namespace(namespace.metadata.name)
        except API_ERRORS as exc:
            raise translate(exc, f"deleting the namespace of instance {instance.id}") from None
        return True

    @hookimpl
    def reconcile(self, worker, runtime, instances):
        settings = kube_settings.load()
        kube = Kube(settings)
        keep = {instance.id for instance in instances}
        labels = common_labels(self.profile.runtime, worker.id)
        try:
            namespaces = [ns for ns in kube.list_namespaces(selector(labels)) if _matches(ns, labels)]
            for namespace in namespaces:
                instance_id = (namespace.metadata.labels or {}).get(INSTANCE_LABEL)
                if instance_id not in keep and (namespace.status is None or namespace.status.phase != "Terminating"):
                    log.info("reconcile: deleting namespace %s of inactive instance %s", namespace.metadata.name,
                             instance_id)
                    kube.delete_namespace(namespace.metadata.name)
            pods = {
                (pod.metadata.labels or {}).get(INSTANCE_LABEL): pod
                for pod in kube.list_pods(selector(labels | POD_SELECTOR))
                if _matches(pod, labels)
            }
            # the other pods of instances of several services: one failed or gone is the instance lost
            service_pods = {}
            for other in kube.list_pods(selector(labels | {COMPONENT_LABEL: SERVICE_COMPONENT})):
                if _matches(other, labels):
                    other_labels = other.metadata.labels or {}
                    service_pods[(other_labels.get(INSTANCE_LABEL), other_labels.get(SERVICE_LABEL))] = other
            failed = set()
            for instance_id, pod in pods.items():
                for service in expected_services(pod):
                    other = service_pods.get((instance_id, service))
                    if other is None or pod_state(other).failure is not None:
                        failed.add(instance_id)
        except API_ERRORS as exc:
            raise translate(exc, "reconciling") from None
        return sorted(
            instance_id for instance_id in keep
            if instance_id not in pods or pod_state(pods[instance_id]).failure is not None or instance_id in failed
        )

    @hookimpl
    def prepare_image(self, runtime, image, worker):
        settings = kube_settings.load()
        kube = Kube(settings)
        manifest = prepull.daemon_set(self.profile, settings, image)
        namespace, name = settings.prepull_namespace, manifest["metadata"]["name"]
        what = f"DaemonSet {namespace}/{name} pulling {image!r}"
        try:
            self._ensure_prepull_namespace(kube, settings)
            self._apply_daemon_set(kube, manifest)
        except API_ERRORS as exc:
            raise _rbac_hint(exc, translate(exc, f"creating {what}")) from None
        deadline = time.monotonic() + settings.prepull_timeout
        while True:
            try:
                found = self._prepull_progress(kube, settings, image)
            except API_ERRORS as exc:
                raise translate(exc, f"reading {what}") from None
            if found.failure:
                # its pods would retry the pull on every node until someone deletes them; the next
                # prepare_image (a pull job, or a launch that finds the image unpulled) makes a new one
                try:
                    kube.delete_daemon_set(namespace, name)
                except API_ERRORS as exc:
                    log.warning("could not delete %s after a failed pull: %s", what, exc)
                raise LaunchError(f"cannot pull image {image!r}: {found.failure}")
            if found.pulled:
                return True
            if time.monotonic() >= deadline:
                raise LaunchError(f"image {image!r} was not pulled on every node within "
                                  f"{settings.prepull_timeout:g} s ({found.waiting}; {what})")
            time.sleep(settings.poll_seconds)

    @hookimpl
    def image_state(self, runtime, image, worker):
        settings = kube_settings.load()
        try:
            found = self._prepull_progress(Kube(settings), settings, image)
        except ApiException as exc:
            if exc.status == 403:
                # a worker whose ClusterRole predates pre-pulls must still launch: the launch pulls as before
                log.warning("cannot tell whether %s is pulled (%s): does the worker's ClusterRole allow "
                            "daemonsets (apps)?", image, error_message(exc))
                return None
            raise translate(exc, f"reading the pre-pull of {image!r}") from None
        except API_ERRORS as exc:
            raise translate(exc, f"reading the pre-pull of {image!r}") from None
        # not pulled ahead: "cannot tell" rather than "unpulled", so a launch does not pre-pull on every node
        # (and wait for all of them) before its pod exists; the kubelet pulls what the pod needs on its own node
        return "pulled" if found.pulled else None

    # -- pre-pull steps ----------------------------------------------------

    def _ensure_prepull_namespace(self, kube, settings):
        if kube.read_namespace(settings.prepull_namespace) is not None:
            return
        try:
            kube.create(prepull.namespace(settings))
        except ApiException as exc:
            if exc.status != 409:  # made meanwhile by another pull
                raise

    def _apply_daemon_set(self, kube, manifest):
        """Create the DaemonSet; one made earlier is kept (its pods hold the image), or updated when its pod
        template differs (another pause image, RuntimeClass)."""
        meta = manifest["metadata"]
        try:
            kube.create_daemon_set(manifest)
            return
        except ApiException as exc:
            if exc.status != 409:
                raise
        existing = kube.read_daemon_set(meta["namespace"], meta["name"])
        if existing is None:
            kube.create_daemon_set(manifest)  # deleted meanwhile
        elif (existing.metadata.annotations or {}).get(prepull.SPEC_ANNOTATION) != meta["annotations"][
                prepull.SPEC_ANNOTATION]:
            log.info("pre-pull: updating DaemonSet %s/%s", meta["namespace"], meta["name"])
            kube.update_daemon_set(manifest)

    def _prepull_progress(self, kube, settings, image):
        """Two reads: the DaemonSet of `image`, and its pods."""
        namespace = settings.prepull_namespace
        found = kube.read_daemon_set(namespace, prepull.daemon_set_name(self.profile.runtime, image))
        if found is None:
            return prepull.PullProgress(waiting="no pre-pull DaemonSet")
        labels = prepull.pod_labels(self.profile.runtime, image)
        pods = [pod for pod in kube.list_pods(selector(labels), namespace) if _matches(pod, labels)]
        return prepull.progress(found, pods)

    # -- launch steps ------------------------------------------------------

    def _create_namespace(self, kube, objects, instance_id, settings, deadline):
        """Create the namespace; one left by an earlier attempt of this launch is deleted first."""
        name = objects.name
        try:
            while True:
                try:
                    kube.create(objects.namespace)
                    return
                except ApiException as exc:
                    if exc.status != 409:
                        raise
                existing = kube.read_namespace(name)
                if existing is None:
                    continue  # gone meanwhile
                if (existing.metadata.labels or {}).get(INSTANCE_LABEL) != instance_id:
                    raise LaunchError(f"namespace {name} already exists and does not belong to instance {instance_id}")
                if existing.status is None or existing.status.phase != "Terminating":
                    log.info("launch: replacing namespace %s left by an earlier attempt", name)
                    kube.delete_namespace(name)
                if time.monotonic() >= deadline:
                    raise LaunchError(f"namespace {name}, left by an earlier attempt, is still being deleted")
                time.sleep(settings.poll_seconds)
        except API_ERRORS as exc:
            raise translate(exc, f"creating namespace {name}") from None

    def _create(self, kube, manifest, settings, deadline):
        what = f"{manifest['kind']} {manifest['metadata']['namespace']}/{manifest['metadata']['name']}"
        while True:
            try:
                return kube.create(manifest)
            except ApiException as exc:
                # a quota just created has no usage yet; admission refuses pods until the controller counts it
                quota_pending = exc.status == 403 and "status unknown for quota" in error_message(exc)
                if quota_pending and time.monotonic() < deadline:
                    time.sleep(settings.poll_seconds)
                    continue
                raise self._explain(translate(exc, f"creating {what}")) from None
            except API_ERRORS as exc:
                raise translate(exc, f"creating {what}") from None

    def _explain(self, error):
        """Point at the overhead settings when the quota (challenge + overhead) refused a pod."""
        if "exceeded quota" not in str(error) or not self.profile.overhead_settings:
            return error
        names = " and ".join(f"CTFHOST_{name}" for name, _ in self.profile.overhead_settings)
        return LaunchError(
            f"{error} (the quota is the challenge's cpu and memory plus {names}: "
            "do they match the RuntimeClass overhead?)"
        )

    def _wait_ready(self, kube, namespace, settings, deadline, timeout, pod_name=NAME, service=""):
        """Until the pod is Ready; `service` ("service 'db': ") starts every failure of a service's pod."""
        waiting = "the pod was just created"
        while True:
            try:
                pod = kube.read_pod(namespace, pod_name)
            except API_ERRORS as exc:
                raise translate(exc, "waiting for the pod") from None
            if pod is None:
                raise LaunchError(f"{service}the pod disappeared while starting (deleted or evicted)")
            state = pod_state(pod)
            if state.ready:
                return
            if state.failure:
                raise LaunchError(f"{service}{state.failure}")
            waiting = state.waiting or waiting
            if time.monotonic() >= deadline:
                raise LaunchError(f"{service}the pod did not become ready within {timeout:g} s ({waiting})")
            time.sleep(settings.poll_seconds)

    def _address(self, settings, namespace, services, name, port, worker, what=""):
        """Where the proxy reaches the Service `name` (of the created `services`): its cluster DNS name, or its node
        port on the node address; `what` (" (endpoint 'admin')") ends the error when it has none."""
        if not settings.nodeport:
            return f"{name}.{namespace}.svc.{settings.cluster_domain}:{port}"
        service = services.get(name)
        ports = (service.spec.ports if service is not None and service.spec else None) or []
        node_port = ports[0].node_port if ports else None
        if not node_port:
            raise LaunchError(f"Kubernetes assigned no node port to service {namespace}/{name}{what}")
        return f"{settings.node_address or worker.address}:{node_port}"

    def _delete_quietly(self, kube, name):
        try:
            kube.delete_namespace(name)
        except API_ERRORS as exc:
            log.warning("could not delete namespace %s after a failed launch: %s", name, exc)


def _rbac_hint(exc, error):
    """Point at the ClusterRole when Kubernetes refused (403) a pre-pull call."""
    if not (isinstance(exc, ApiException) and exc.status == 403):
        return error
    return LaunchError(f"{error} (the worker's ClusterRole needs create, get, patch and delete on daemonsets "
                       "in the apps group for pre-pulls: see docs/kubernetes.md)")


def _matches(obj, labels):
    """Also check labels here: a selector is a request, and some servers ignore it."""
    found = obj.metadata.labels or {}
    return all(found.get(key) == value for key, value in labels.items())
