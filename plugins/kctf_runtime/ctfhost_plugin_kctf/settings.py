"""The CTFHOST_K8S_* settings of the Kubernetes runtimes, read from the app config and checked."""

import ipaddress
import json
import re
from dataclasses import dataclass

from ctfhost.plugin_api import LaunchError, plugin_setting

BACKEND_MODES = ("service", "nodeport")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")

# The proxy is Traefik installed in its own namespace (deploy/kubernetes/traefik.yaml
# and the Traefik Helm chart both label its pods app.kubernetes.io/name=traefik).
DEFAULT_PROXY_NAMESPACE_SELECTOR = "kubernetes.io/metadata.name=traefik"
DEFAULT_PROXY_POD_SELECTOR = "app.kubernetes.io/name=traefik"
DEFAULT_DNS_NAMESPACE_SELECTOR = "kubernetes.io/metadata.name=kube-system"
DEFAULT_DNS_POD_SELECTOR = "k8s-app=kube-dns"
# image pre-pull: the DaemonSets live in a namespace of ctfhost's own; their main container is this tiny image,
# which every cluster already holds (the kubelet's sandbox image)
DEFAULT_PREPULL_NAMESPACE = "ctfhost-prepull"
DEFAULT_PREPULL_PAUSE_IMAGE = "registry.k8s.io/pause:3.9"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class SettingError(LaunchError):
    """A CTFHOST_* setting of a Kubernetes runtime holds a value that cannot work."""


def setting(name, default=None):
    """The raw value of CTFHOST_<name> (``K8S_...`` or ``KATA_...``), or `default` when unset or empty."""
    prefix, _, rest = name.partition("_")
    return plugin_setting(prefix, rest, default)


def flag(name, default=False):
    value = setting(name)
    return default if value is None else str(value).strip().lower() in ("1", "true", "yes", "on")


def number(name, default, low=0.0):
    raw = setting(name, default)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise SettingError(f"CTFHOST_{name}={raw!r} is not a number") from None
    if value < low:
        raise SettingError(f"CTFHOST_{name}={raw!r} must be at least {low:g}")
    return value


def parse_selector(name, text):
    """A LabelSelector from JSON (labels, or a whole selector) or from `k=v,k2=v2`.

    Only the explicit JSON ``{}`` selects everything, so a typo never opens a
    NetworkPolicy to the whole cluster unnoticed.
    """
    text = str(text).strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise SettingError(f"CTFHOST_{name} is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise SettingError(f"CTFHOST_{name} must be a JSON object")
        selector = value if set(value) & {"matchLabels", "matchExpressions"} else {"matchLabels": value}
        if set(selector) - {"matchLabels", "matchExpressions"}:
            raise SettingError(f"CTFHOST_{name}: a selector has only matchLabels and matchExpressions")
    else:
        labels = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise SettingError(f"CTFHOST_{name}={text!r}: write key=value[,key=value] or JSON")
            labels[key.strip()] = value.strip()
        selector = {"matchLabels": labels}
    labels = selector.get("matchLabels", {})
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise SettingError(f"CTFHOST_{name}: label values must be strings")
    return {key: value for key, value in selector.items() if value}


def selector_setting(name, default):
    return parse_selector(name, setting(name, default))


def parse_cidrs(name, text):
    cidrs = []
    for part in str(text or "").split(","):
        if part.strip():
            try:
                cidrs.append(str(ipaddress.ip_network(part.strip(), strict=False)))
            except ValueError as exc:
                raise SettingError(f"CTFHOST_{name}: {exc}") from None
    return tuple(cidrs)


@dataclass(frozen=True)
class KubeSettings:
    """What shapes an instance's objects besides the challenge: read once per hook call."""

    namespace_prefix: str
    backend_mode: str
    node_address: str | None
    cluster_domain: str
    proxy_namespace_selector: dict
    proxy_pod_selector: dict
    proxy_cidrs: tuple
    dns_namespace_selector: dict
    dns_pod_selector: dict
    blocked_cidrs: tuple
    cpu_request_ratio: float
    image_pull_policy: str
    tmp_size_mb: int
    poll_seconds: float
    request_timeout: float
    prepull_namespace: str
    prepull_pause_image: str
    prepull_timeout: float

    @property
    def nodeport(self):
        return self.backend_mode == "nodeport"


def load():
    """The current settings; a value that cannot work raises SettingError (a LaunchError)."""
    prefix = str(setting("K8S_NAMESPACE_PREFIX", "ctfhost-"))
    # the namespace is prefix + a 36-character instance id: one DNS label of at most 63
    if len(prefix) > 27 or not prefix.replace("-", "a").isalnum() or prefix != prefix.lower() or prefix[0] == "-":
        raise SettingError(
            f"CTFHOST_K8S_NAMESPACE_PREFIX={prefix!r}: use at most 27 lowercase letters, digits or '-', "
            "starting with a letter or digit"
        )
    mode = str(setting("K8S_BACKEND_MODE", "service")).strip().lower()
    if mode not in BACKEND_MODES:
        raise SettingError(f"CTFHOST_K8S_BACKEND_MODE={mode!r}: use one of {', '.join(BACKEND_MODES)}")
    proxy_cidrs = parse_cidrs("K8S_PROXY_CIDRS", setting("K8S_PROXY_CIDRS"))
    if mode == "nodeport" and not proxy_cidrs:
        raise SettingError(
            "CTFHOST_K8S_BACKEND_MODE=nodeport needs CTFHOST_K8S_PROXY_CIDRS: the addresses the proxy's "
            "connections arrive from (the proxy host, and the node addresses when kube-proxy masquerades)"
        )
    pull_policy = str(setting("K8S_IMAGE_PULL_POLICY", "IfNotPresent"))
    if pull_policy not in PULL_POLICIES:
        raise SettingError(f"CTFHOST_K8S_IMAGE_PULL_POLICY={pull_policy!r}: use one of {', '.join(PULL_POLICIES)}")
    ratio = number("K8S_CPU_REQUEST_RATIO", 1.0, low=0.001)
    if ratio > 1:
        raise SettingError("CTFHOST_K8S_CPU_REQUEST_RATIO must be between 0.001 and 1")
    prepull_namespace = str(setting("K8S_PREPULL_NAMESPACE", DEFAULT_PREPULL_NAMESPACE)).strip()
    if not _DNS_LABEL.match(prepull_namespace):
        raise SettingError(f"CTFHOST_K8S_PREPULL_NAMESPACE={prepull_namespace!r} is not a namespace name "
                           "(at most 63 lowercase letters, digits or '-')")
    return KubeSettings(
        namespace_prefix=prefix,
        backend_mode=mode,
        node_address=setting("K8S_NODE_ADDRESS"),
        cluster_domain=str(setting("K8S_CLUSTER_DOMAIN", "cluster.local")).strip("."),
        proxy_namespace_selector=selector_setting("K8S_PROXY_NAMESPACE_SELECTOR", DEFAULT_PROXY_NAMESPACE_SELECTOR),
        proxy_pod_selector=selector_setting("K8S_PROXY_POD_SELECTOR", DEFAULT_PROXY_POD_SELECTOR),
        proxy_cidrs=proxy_cidrs,
        dns_namespace_selector=selector_setting("K8S_DNS_NAMESPACE_SELECTOR", DEFAULT_DNS_NAMESPACE_SELECTOR),
        dns_pod_selector=selector_setting("K8S_DNS_POD_SELECTOR", DEFAULT_DNS_POD_SELECTOR),
        blocked_cidrs=parse_cidrs("K8S_BLOCKED_CIDRS", setting("K8S_BLOCKED_CIDRS")),
        cpu_request_ratio=ratio,
        image_pull_policy=pull_policy,
        tmp_size_mb=int(number("K8S_TMP_SIZE_MB", 64)),
        poll_seconds=number("K8S_POLL_SECONDS", 0.5, low=0.001),
        request_timeout=number("K8S_REQUEST_TIMEOUT", 30, low=0.1),
        prepull_namespace=prepull_namespace,
        prepull_pause_image=str(setting("K8S_PREPULL_PAUSE_IMAGE", DEFAULT_PREPULL_PAUSE_IMAGE)).strip(),
        prepull_timeout=number("K8S_PREPULL_TIMEOUT_SECONDS", 600, low=0.001),
    )
