"""Image pre-pull on a cluster: a DaemonSet per runtime and image, and what its pods say about the pull.

The DaemonSet ``prepull-<hash>`` (in CTFHOST_K8S_PREPULL_NAMESPACE) runs one
pod per node whose init container is the image, with a command that exits at
once, and whose main container is a pause image that keeps the pod (and so
the image, which the kubelet's image garbage collection never removes while
a container uses it) on the node. The kubelet pulls the init container's
image before it creates the container: an image without a shell is still
pulled, its start failure afterwards is no pull failure.
"""

import hashlib
import json
from dataclasses import dataclass

from ctfhost_plugin_kctf.manifests import COMPONENT_LABEL, MANAGED_BY, MANAGED_BY_LABEL, RUNTIME_LABEL

COMPONENT = "prepull"
PREPULL_LABEL = "ctfhost.io/prepull"  # the hash of runtime and image: selects the DaemonSet's pods
IMAGE_ANNOTATION = "ctfhost.io/image"  # the exact image reference (a label value could not hold it)
SPEC_ANNOTATION = "ctfhost.io/spec-hash"  # the pod template it was made with: a changed one is updated
PULL_CONTAINER = "pull"
PAUSE_CONTAINER = "pause"
NOBODY = 65534  # any image runs `sh -c "exit 0"` as this user, whatever its own USER is

# what the kubelet's image manager reports while it cannot get an image (kubelet/images/types.go)
PULL_FAILURES = frozenset({
    "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "ErrImageInspect",
    "RegistryUnavailable", "SignatureValidationFailed",
})
# waiting reasons the kubelet gives only after the image is on the node (creating or starting the container failed,
# as for an image without a shell); not PodInitializing or ContainerCreating, which it also shows during the pull
AFTER_PULL = frozenset({
    "CreateContainerConfigError", "CreateContainerError", "RunContainerError", "CrashLoopBackOff",
    "PreStartHookError", "PostStartHookError",
})

HARDENED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
TINY = {"requests": {"cpu": "1m", "memory": "8Mi"}, "limits": {"cpu": "10m", "memory": "16Mi"}}


def image_hash(runtime, image):
    return hashlib.sha256(f"{runtime}\0{image}".encode()).hexdigest()[:12]


def daemon_set_name(runtime, image):
    return f"prepull-{image_hash(runtime, image)}"


def pod_labels(runtime, image):
    """The labels of the DaemonSet's pods (its selector): one image of one runtime."""
    return {MANAGED_BY_LABEL: MANAGED_BY, COMPONENT_LABEL: COMPONENT, PREPULL_LABEL: image_hash(runtime, image)}


def namespace(settings):
    """The namespace of the pre-pull DaemonSets: ctfhost's own, enforcing Pod Security "restricted"."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": settings.prepull_namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY, COMPONENT_LABEL: COMPONENT,
                       "pod-security.kubernetes.io/enforce": "restricted"},
        },
    }


def daemon_set(profile, settings, image):
    """The DaemonSet that pulls `image` on every node the `profile`'s pods run on."""
    labels = pod_labels(profile.runtime, image)
    pod_spec = {
        "initContainers": [{
            "name": PULL_CONTAINER,
            "image": image,
            # a pull ahead is for launches that find the image there: pull once, never again on a restart
            "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", "exit 0"],
            "resources": TINY,
            "securityContext": HARDENED,
        }],
        "containers": [{
            "name": PAUSE_CONTAINER,
            "image": settings.prepull_pause_image,
            "imagePullPolicy": "IfNotPresent",
            "resources": TINY,
            "securityContext": HARDENED,
        }],
        "securityContext": {"runAsUser": NOBODY, "runAsGroup": NOBODY, "runAsNonRoot": True,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 1,
    }
    runtime_class = profile.runtime_class()
    if runtime_class:  # kata: the image is pulled the way the runtime's own pods get it
        pod_spec["runtimeClassName"] = runtime_class
    template = {"metadata": {"labels": dict(labels)}, "spec": pod_spec}
    spec_hash = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": daemon_set_name(profile.runtime, image),
            "namespace": settings.prepull_namespace,
            "labels": labels | {RUNTIME_LABEL: profile.runtime},
            "annotations": {IMAGE_ANNOTATION: image, SPEC_ANNOTATION: spec_hash},
        },
        "spec": {"selector": {"matchLabels": dict(labels)}, "template": template},
    }


@dataclass(frozen=True)
class PullProgress:
    pulled: bool = False
    failure: str | None = None  # set: a node cannot pull the image (the kubelet's words)
    waiting: str = ""  # what is still missing, for a timeout message


def _pull_status(pod):
    statuses = (pod.status.init_container_statuses if pod.status else None) or []
    return next((status for status in statuses if status.name == PULL_CONTAINER), None)


def _has_pulled(status):
    if status.image_id:
        return True
    state, last = status.state, status.last_state
    if state and (state.running or state.terminated) or last and last.terminated:
        return True
    return bool(state and state.waiting and state.waiting.reason in AFTER_PULL)


def _unschedulable(pod):
    """No node takes the pod (a node the RuntimeClass excludes, or one that is full): no node to pull on."""
    if pod.spec and pod.spec.node_name:
        return False
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable" for c in conditions)


def progress(daemon_set, pods):
    """Whether every node running the DaemonSet's pod has pulled its image, from the DaemonSet and its `pods`."""
    uid = daemon_set.metadata.uid
    # pods of this DaemonSet only: a deleted one of the same name may leave pods that are going away
    pods = [pod for pod in pods if not pod.metadata.deletion_timestamp and (
        not uid or any(owner.uid == uid for owner in pod.metadata.owner_references or []))]
    for pod in pods:
        status = _pull_status(pod)
        waiting = status and status.state and status.state.waiting
        if waiting and waiting.reason in PULL_FAILURES:
            node = (pod.spec.node_name if pod.spec else None) or pod.metadata.name
            return PullProgress(failure=f"node {node}: {waiting.reason}" + (
                f": {waiting.message}" if waiting.message else ""))
    status = daemon_set.status
    generation = daemon_set.metadata.generation
    if status is None or status.desired_number_scheduled is None or (
            generation and (status.observed_generation or 0) < generation):
        return PullProgress(waiting="the DaemonSet controller has not counted the nodes yet")
    desired = status.desired_number_scheduled
    if desired == 0:
        return PullProgress(waiting="no node runs the DaemonSet's pod")
    if len(pods) < desired:
        return PullProgress(waiting=f"{len(pods)} of {desired} pods created")
    scheduled = [pod for pod in pods if not _unschedulable(pod)]
    pending = [pod.metadata.name for pod in scheduled if not (_pull_status(pod) and _has_pulled(_pull_status(pod)))]
    if pending or not scheduled:
        return PullProgress(waiting=f"{len(scheduled) - len(pending)} of {len(scheduled)} scheduled pods pulled")
    return PullProgress(pulled=True)
