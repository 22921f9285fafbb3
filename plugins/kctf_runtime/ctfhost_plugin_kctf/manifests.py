"""The Kubernetes objects of one instance, built from a runtime profile: namespace, quota, policies, services, pods.

Every instance gets a namespace of its own. NetworkPolicies, the
ResourceQuota and Pod Security admission all work per namespace, and
deleting the namespace deletes everything in it, so destroy is one call that
cannot leave a stray object behind.
"""

import hashlib
import re
from dataclasses import dataclass
from decimal import Decimal

from kubernetes.utils import parse_quantity

from ctfhost_plugin_kctf.settings import SettingError, setting

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "ctfhost"
COMPONENT_LABEL = "app.kubernetes.io/component"
RUNTIME_LABEL = "ctfhost.io/runtime"
INSTANCE_LABEL = "ctfhost.io/instance"
CHALLENGE_LABEL = "ctfhost.io/challenge"
TEAM_LABEL = "ctfhost.io/team"
WORKER_LABEL = "ctfhost.io/worker"
SERVICE_LABEL = "ctfhost.io/service"

NAME = "challenge"  # the pod, its container, its service and its port share it
POD_SELECTOR = {COMPONENT_LABEL: NAME}
# a challenge of several services: each other service is a pod `service-<name>` behind a headless Service named
# after it, and `main` is a headless Service of the challenge pod, so that every pod reaches the others by name
MAIN = "main"
SERVICE_COMPONENT = "service"
SERVICE_POD_PREFIX = "service-"
SERVICES_ANNOTATION = "ctfhost.io/services"  # on the challenge's pod: the services of the instance, comma-separated
# every endpoint a challenge exposes beside the main port (`expose`, a service's `expose`) is a Service
# `endpoint-<endpoint name>` of its own, published like `challenge`; endpoint names are DNS labels of at most 40
ENDPOINT_SERVICE_PREFIX = "endpoint-"


def endpoint_service_name(endpoint_name):
    """The name of the Service that publishes the endpoint `endpoint_name`."""
    return ENDPOINT_SERVICE_PREFIX + endpoint_name


def service_selector(service):
    """The labels that select the pod running `service` of the instance: the challenge's pod for `main`."""
    if service == MAIN:
        return dict(POD_SELECTOR)
    return {COMPONENT_LABEL: SERVICE_COMPONENT, SERVICE_LABEL: service}


def expected_services(pod):
    """The services the challenge's pod (a kubernetes client object) says the instance has beside it."""
    return [name for name in ((pod.metadata.annotations or {}).get(SERVICES_ANNOTATION) or "").split(",") if name]
QUOTA_NAME = "ctfhost"

# Where an instance with "internet": true may still not connect: kCTF's list
# (kctf-operator/resources/network-policy.go, NewNetworkPolicyBlockInternal)
# and the IPv6 equivalents.
BLOCKED_IPV4 = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
)
BLOCKED_IPV6 = ("::1/128", "::ffff:0:0/96", "64:ff9b::/96", "2001:db8::/32", "fc00::/7", "fe80::/10", "ff00::/8")

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Profile:
    """How one Kubernetes runtime isolates and sizes its pods; everything else is shared.

    ``runtime_class`` and the pod overhead come from settings (``CTFHOST_<name>``)
    so an operator can match them to the cluster's RuntimeClass.
    """

    runtime: str
    # the Pod Security Standard the instance namespace enforces
    pod_security: str
    container_security: dict
    # container name -> AppArmor profile, for clusters older than 1.30 that
    # only read the annotation
    apparmor_annotation: str | None = None
    runtime_class_setting: str | None = None
    runtime_class_default: str | None = None
    overhead_settings: tuple = ()  # ((setting, default), (setting, default)) for cpu and memory

    def runtime_class(self):
        if not self.runtime_class_setting:
            return None
        return str(setting(self.runtime_class_setting, self.runtime_class_default))

    def overhead(self):
        """(millicores, bytes) the RuntimeClass adds to every pod; (0, 0) without one."""
        if not self.overhead_settings:
            return 0, 0
        (cpu_name, cpu_default), (memory_name, memory_default) = self.overhead_settings
        return (
            int(_quantity(cpu_name, setting(cpu_name, cpu_default)) * 1000),
            int(_quantity(memory_name, setting(memory_name, memory_default))),
        )


def _quantity(name, raw):
    try:
        value = parse_quantity(str(raw))
    except ValueError:
        raise SettingError(f"CTFHOST_{name}={raw!r} is not a Kubernetes quantity (e.g. 250m, 160Mi)") from None
    if value < 0:
        raise SettingError(f"CTFHOST_{name}={raw!r} must not be negative")
    return Decimal(value)


# kCTF gives its challenge container exactly this (kctf-operator/controllers/
# deployment/deployment.go): CAP_SYS_ADMIN added, a read-only root filesystem,
# and AppArmor unconfined through the annotation
# container.apparmor.security.beta.kubernetes.io/challenge, because nsjail
# creates namespaces and mounts. kCTF sets no seccomp profile, so its pods get
# the kubelet default, Unconfined; it is written out here so that a kubelet
# running with --seccomp-default does not break nsjail.
KCTF = Profile(
    runtime="kctf",
    pod_security="privileged",
    container_security={
        "capabilities": {"add": ["SYS_ADMIN"]},
        "readOnlyRootFilesystem": True,
        "seccompProfile": {"type": "Unconfined"},
        "appArmorProfile": {"type": "Unconfined"},
    },
    apparmor_annotation="unconfined",
)


def label_value(text):
    """`text` as a label value: itself when valid, else a readable part plus a hash.

    Team and worker ids are free text up to 64 and 128 characters; label
    values are at most 63 characters of a restricted alphabet. The exact
    value is kept in an annotation.
    """
    text = str(text)
    if len(text) <= 63 and _LABEL_VALUE.match(text):
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:40].strip("-_.")
    return f"{readable}-{digest}" if readable else digest


def namespace_name(settings, instance_id):
    return f"{settings.namespace_prefix}{instance_id}"


def common_labels(runtime, worker_id):
    """The labels every object of this runtime on this worker carries (reconcile selects by them)."""
    return {MANAGED_BY_LABEL: MANAGED_BY, RUNTIME_LABEL: runtime, WORKER_LABEL: label_value(worker_id)}


def selector(labels):
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def _cpu(millicores):
    return str(millicores // 1000) if millicores % 1000 == 0 else f"{millicores}m"


def _memory(size):
    mebibyte = 1024 * 1024
    return f"{size // mebibyte}Mi" if size % mebibyte == 0 else str(size)


@dataclass(frozen=True)
class Sizing:
    """What the container asks for, and what the namespace quota allows: the container plus the pod overhead.

    The container's limits are the challenge's ``cpu_count`` and
    ``memory_mb``: Kata sizes the micro-VM from them, so the workload gets
    what the challenge asked for. The RuntimeClass overhead (the VMM and
    guest kernel) is charged on top by the scheduler and by ResourceQuota, so
    the quota is container + overhead, exactly.
    """

    cpu_request: int  # millicores
    cpu_limit: int
    memory: int  # bytes, request = limit
    overhead_cpu: int = 0
    overhead_memory: int = 0

    @classmethod
    def of(cls, challenge, settings, profile):
        return cls.sized(challenge.cpu_count, challenge.memory_mb, settings, profile)

    @classmethod
    def sized(cls, cpu_count, memory_mb, settings, profile):
        limit = int(cpu_count) * 1000
        overhead_cpu, overhead_memory = profile.overhead()
        return cls(
            cpu_request=max(1, round(limit * settings.cpu_request_ratio)),
            cpu_limit=limit,
            memory=int(memory_mb) * 1024 * 1024,
            overhead_cpu=overhead_cpu,
            overhead_memory=overhead_memory,
        )

    def container(self):
        return {
            "requests": {"cpu": _cpu(self.cpu_request), "memory": _memory(self.memory)},
            "limits": {"cpu": _cpu(self.cpu_limit), "memory": _memory(self.memory)},
        }

    def quota(self):
        memory = _memory(self.memory + self.overhead_memory)
        return {
            "requests.cpu": _cpu(self.cpu_request + self.overhead_cpu),
            "limits.cpu": _cpu(self.cpu_limit + self.overhead_cpu),
            "requests.memory": memory,
            "limits.memory": memory,
        }


def quota_of(sizings):
    """The quota of pods sized `sizings`: what their containers and the overhead of each pod add up to."""
    return Sizing(
        cpu_request=sum(s.cpu_request for s in sizings), cpu_limit=sum(s.cpu_limit for s in sizings),
        memory=sum(s.memory for s in sizings), overhead_cpu=sum(s.overhead_cpu for s in sizings),
        overhead_memory=sum(s.overhead_memory for s in sizings),
    ).quota()


@dataclass(frozen=True)
class InstanceObjects:
    namespace: dict
    quota: dict
    policies: list
    service: dict
    pod: dict
    # a challenge of several services: the headless Services (`main` and one per service), then their pods
    services: tuple = ()
    service_pods: tuple = ()
    # the Services `endpoint-<name>` publishing each endpoint of challenge.endpoint_specs, in its order
    endpoint_services: tuple = ()

    @property
    def name(self):
        return self.namespace["metadata"]["name"]

    def pod_names(self):
        """(pod name, service name) of every pod, the services' first, in creation order."""
        return [(pod["metadata"]["name"], pod["metadata"]["labels"][SERVICE_LABEL]) for pod in self.service_pods] + [
            (NAME, MAIN)]

    def in_namespace(self):
        """The namespaced objects in creation order: limits and policies before the pods, main's pod last."""
        return [self.quota, *self.policies, self.service, *self.endpoint_services, *self.services,
                *self.service_pods, self.pod]

    def all(self):
        return [self.namespace, *self.in_namespace()]


def _meta(name, namespace, labels, annotations=None):
    meta = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if annotations:
        meta["annotations"] = annotations
    return meta


def _policy(name, namespace, labels, spec):
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(name, namespace, labels),
        "spec": spec,
    }


def network_policies(settings, namespace, labels, proxy_ports, internet, internet_pods=None):
    """Deny all; let the proxy in on the exposed ports; let DNS out; the internet only when allowed.

    `proxy_ports`: {service: [port, ...]}, the ports the proxy reaches on the pod of each service (`main`
    first, always there): `allow-proxy` for main's pod, `allow-proxy-<service>` for another service's pod.
    `internet_pods`: with several services, the pod selectors (matchLabels) of the pods allowed out, each its
    own policy; otherwise `internet` lets every pod of the namespace out."""
    if settings.nodeport:
        proxy_peers = []  # the proxy is outside the cluster: only addresses identify it
    else:
        proxy_peers = [{
            "namespaceSelector": settings.proxy_namespace_selector,
            "podSelector": settings.proxy_pod_selector,
        }]
    proxy_peers += [{"ipBlock": {"cidr": cidr}} for cidr in settings.proxy_cidrs]
    policies = [_policy("default-deny", namespace, labels, {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})]
    # the proxy reaches each pod on the ports it exposes, and nothing else of it
    for service, ports in proxy_ports.items():
        policies.append(_policy("allow-proxy" if service == MAIN else f"allow-proxy-{service}", namespace, labels, {
            "podSelector": {"matchLabels": service_selector(service)},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": proxy_peers, "ports": [{"protocol": "TCP", "port": port} for port in ports]}],
        }))
    policies += [
        _policy("allow-dns", namespace, labels, {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{
                "to": [{
                    "namespaceSelector": settings.dns_namespace_selector,
                    "podSelector": settings.dns_pod_selector,
                }],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
            }],
        }),
    ]
    blocked = list(BLOCKED_IPV4 + BLOCKED_IPV6) + list(settings.blocked_cidrs)
    egress = [{"to": [
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": [c for c in blocked if ":" not in c]}},
        {"ipBlock": {"cidr": "::/0", "except": [c for c in blocked if ":" in c]}},
    ]}]
    if internet_pods is None and internet:
        policies.append(_policy("allow-internet", namespace, labels, {
            "podSelector": {}, "policyTypes": ["Egress"], "egress": egress,
        }))
    for name, pod_labels in (internet_pods or {}).items():
        policies.append(_policy(f"allow-internet-{name}", namespace, labels, {
            "podSelector": {"matchLabels": dict(pod_labels)}, "policyTypes": ["Egress"], "egress": egress,
        }))
    return policies


# A service beside the challenge (a database, an admin bot) runs no nsjail: it gets none of the privileges kCTF
# gives the challenge container for it (SYS_ADMIN, unconfined seccomp and AppArmor) but Pod Security's
# "restricted" container settings, with a writable root filesystem as stock images expect.
SERVICE_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _env(instance, *given):
    """The container's env: the variables given (later ones win), and the instance's own flag over them all."""
    env = {}
    for variables in given:
        env.update(variables or {})
    if instance.flag:
        env["FLAG"] = instance.flag  # the instance's own flag wins over a static one in env
    return [{"name": name, "value": value} for name, value in sorted(env.items())]


def _readiness(port):
    """Ready = the port accepts connections; the launch waits for every pod to be Ready."""
    return {"tcpSocket": {"port": port}, "periodSeconds": 2, "timeoutSeconds": 1}


def _exposed_ports(endpoints):
    """containerPort entries of a container's exposed `endpoints` (unnamed: a port name has at most 15 characters,
    an endpoint name up to 40)."""
    return [{"containerPort": endpoint["port"], "protocol": "TCP"} for endpoint in endpoints]


def _service_container(profile, settings, instance, service, spec, sizing):
    """A service's container: restricted privileges, its own image, command, environment and size."""
    options = spec.get("options") or {}
    container = {
        "name": service,
        "image": spec["image"],
        "imagePullPolicy": settings.image_pull_policy,
        "env": _env(instance, options.get("env"), spec.get("environment")),
        "resources": sizing.container(),
        "securityContext": SERVICE_SECURITY,
    }
    exposed = spec.get("expose") or []
    if exposed:
        container["ports"] = _exposed_ports(exposed)
        # one readiness probe per container: the first exposed port stands for the others of this container
        container["readinessProbe"] = _readiness(exposed[0]["port"])
    # Kubernetes' command replaces the image's ENTRYPOINT, args its CMD
    command = spec.get("entrypoint") or options.get("command")
    args = spec.get("command") or options.get("args")
    if command:
        container["command"] = list(command)
    if args:
        container["args"] = list(args)
    if settings.tmp_size_mb:
        container["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
    return container


def within_instance_policy(namespace, labels):
    """The pods of one instance reach each other (a challenge of several services), and nothing else more."""
    return _policy("allow-within-instance", namespace, labels, {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"podSelector": {}}]}],
        "egress": [{"to": [{"podSelector": {}}]}],
    })


def _published(settings, name, namespace, labels, selector_labels, port, port_name=None):
    """A Service the proxy reaches one port of a pod through: ClusterIP, or NodePort in node-port mode."""
    entry = {"name": port_name} if port_name else {}
    entry |= {"protocol": "TCP", "port": port, "targetPort": port}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, namespace, labels),
        "spec": {
            "type": "NodePort" if settings.nodeport else "ClusterIP",
            "selector": dict(selector_labels),
            "ports": [entry],
        },
    }


def _headless(name, namespace, labels, selector_labels):
    """A Service without a cluster IP: its name resolves to the pod's address, on any port the policies allow."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, namespace, labels),
        "spec": {"clusterIP": "None", "selector": dict(selector_labels)},
    }


def _pod_spec(profile, settings, containers):
    spec = {
        "containers": containers,
        "restartPolicy": "Always",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 5,
    }
    if settings.tmp_size_mb:
        spec["volumes"] = [{"name": "tmp", "emptyDir": {"sizeLimit": f"{settings.tmp_size_mb}Mi"}}]
    runtime_class = profile.runtime_class()
    if runtime_class:
        spec["runtimeClassName"] = runtime_class
    return spec


def _apparmor(profile, container_name):
    if not profile.apparmor_annotation:
        return None
    return {f"container.apparmor.security.beta.kubernetes.io/{container_name}": profile.apparmor_annotation}


def _container(profile, settings, challenge, instance, sizing):
    options = challenge.options
    container = {
        "name": NAME,
        "image": challenge.image,
        "imagePullPolicy": settings.image_pull_policy,
        "ports": [{"name": NAME, "containerPort": challenge.port, "protocol": "TCP"},
                  *_exposed_ports(challenge.exposed)],
        "env": _env(instance, options.get("env")),
        "resources": sizing.container(),
        # on the main port only: one readiness probe per container, main's other exposed ports count as ready with it
        "readinessProbe": _readiness(challenge.port),
        "securityContext": profile.container_security,
    }
    for key in ("command", "args"):
        if key in options:
            container[key] = list(options[key])
    if settings.tmp_size_mb:
        container["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
    return container


def build(profile, settings, challenge, instance, worker):
    """Every object of one instance, as API dicts."""
    name = namespace_name(settings, instance.id)
    labels = common_labels(profile.runtime, worker.id) | {
        INSTANCE_LABEL: instance.id,
        CHALLENGE_LABEL: challenge.id,
        TEAM_LABEL: label_value(instance.team_id),
    }
    sizing = Sizing.of(challenge, settings, profile)
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": labels | {"pod-security.kubernetes.io/enforce": profile.pod_security},
            # label values are shortened when needed; these keep the exact ids
            "annotations": {
                "ctfhost.io/team-id": str(instance.team_id),
                "ctfhost.io/worker-id": str(worker.id),
                "ctfhost.io/hostname": str(instance.hostname or ""),
            },
        },
    }
    specs = challenge.service_specs
    service_sizings = {service: Sizing.sized(spec.get("cpu_count", 1), spec.get("memory_mb", 512), settings, profile)
                       for service, spec in specs.items()}
    endpoints = challenge.endpoint_specs
    published = 1 + len(endpoints)  # `challenge` and one Service per endpoint: each one port, a node port each
    hard = quota_of([sizing, *service_sizings.values()]) | {
        "pods": str(1 + len(specs)),
        "services": str(published + (len(specs) + 1 if specs else 0)),
        "services.nodeports": str(published) if settings.nodeport else "0",
        "services.loadbalancers": "0",
    }
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": _meta(QUOTA_NAME, name, labels),
        "spec": {"hard": hard},
    }
    service = _published(settings, NAME, name, labels, POD_SELECTOR, challenge.port, port_name=NAME)
    endpoint_services = [
        _published(settings, endpoint_service_name(endpoint["name"]), name, labels,
                   service_selector(endpoint["service"]), endpoint["port"])
        for endpoint in endpoints
    ]
    main_annotations = _apparmor(profile, NAME) or {}
    if specs:  # what inspect expects beside this pod
        main_annotations[SERVICES_ANNOTATION] = ",".join(specs)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _meta(NAME, name, labels | POD_SELECTOR, main_annotations or None),
        "spec": _pod_spec(profile, settings, [_container(profile, settings, challenge, instance, sizing)]),
    }
    internet_pods = None
    if specs:  # each pod out only if its own options say so
        internet_pods = {MAIN: POD_SELECTOR} if challenge.options.get("internet") else {}
        internet_pods.update({other: service_selector(other)
                              for other, spec in specs.items() if (spec.get("options") or {}).get("internet")})
    proxy_ports = {MAIN: [challenge.port]}
    for endpoint in endpoints:
        proxy_ports.setdefault(endpoint["service"], []).append(endpoint["port"])
    policies = network_policies(settings, name, labels, proxy_ports, bool(challenge.options.get("internet")),
                                internet_pods)
    services, service_pods = [], []
    if specs:
        policies.append(within_instance_policy(name, labels))
        services.append(_headless(MAIN, name, labels, POD_SELECTOR))
        for other, spec in specs.items():
            selected = service_selector(other)
            services.append(_headless(other, name, labels, selected))
            container = _service_container(profile, settings, instance, other, spec, service_sizings[other])
            service_pods.append({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": _meta(SERVICE_POD_PREFIX + other, name, labels | selected),
                "spec": _pod_spec(profile, settings, [container]),
            })
    return InstanceObjects(
        namespace=namespace,
        quota=quota,
        policies=policies,
        service=service,
        pod=pod,
        services=tuple(services),
        service_pods=tuple(service_pods),
        endpoint_services=tuple(endpoint_services),
    )
