"""The worker's Kubernetes API connection, and how API failures become launch errors."""

import json
import logging
import os
import threading

import kubernetes
import urllib3
from kubernetes.client import ApiException

from ctfhost.plugin_api import LaunchError, TransientError

from ctfhost_plugin_kctf.settings import SettingError, flag, setting

log = logging.getLogger(__name__)

CONNECTION_SETTINGS = ("K8S_API_URL", "K8S_TOKEN", "K8S_TOKEN_FILE", "K8S_CA_FILE", "K8S_KUBECONFIG", "K8S_CONTEXT")

_lock = threading.Lock()
_cached = None  # (settings key, ApiClient): one connection pool per process


def _read_token(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError as exc:
        raise SettingError(f"CTFHOST_K8S_TOKEN_FILE: cannot read {path}: {exc}") from None


def _configuration(api_url, token, token_file, ca_file, kubeconfig, context, insecure):
    """Explicit URL first, then an explicit kubeconfig/context, then in-cluster, then ~/.kube/config."""
    configuration = kubernetes.client.Configuration()
    try:
        if api_url:
            configuration.host = api_url.rstrip("/")
            if token or token_file:
                configuration.api_key = {"authorization": token or _read_token(token_file)}
                configuration.api_key_prefix = {"authorization": "Bearer"}
            if token_file and not token:
                # projected service-account tokens rotate: read the file again on each request
                def refresh(config):
                    config.api_key["authorization"] = _read_token(token_file)

                configuration.refresh_api_key_hook = refresh
            configuration.ssl_ca_cert = ca_file
            configuration.verify_ssl = not insecure
        elif kubeconfig or context:
            kubernetes.config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=configuration, persist_config=False
            )
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        else:
            kubernetes.config.load_kube_config(client_configuration=configuration, persist_config=False)
    except kubernetes.config.ConfigException as exc:
        raise SettingError(
            f"no usable Kubernetes configuration ({exc}); run the worker in the cluster, give it a kubeconfig "
            "(CTFHOST_K8S_KUBECONFIG, CTFHOST_K8S_CONTEXT) or set CTFHOST_K8S_API_URL and CTFHOST_K8S_TOKEN"
        ) from None
    return configuration


def api_client():
    """The process's ApiClient for the current CTFHOST_K8S_* settings (rebuilt when they change)."""
    global _cached
    key = tuple(setting(name) for name in CONNECTION_SETTINGS) + (flag("K8S_INSECURE"),)
    with _lock:
        if _cached is None or _cached[0] != key:
            _cached = (key, kubernetes.client.ApiClient(_configuration(*key)))
        return _cached[1]


def error_message(exc):
    """The `message` of the Status Kubernetes answered with, else the HTTP reason."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return f"{exc.status} {exc.reason}".strip()


def translate(exc, doing):
    """A LaunchError or TransientError for an API failure while `doing` something."""
    if isinstance(exc, ApiException):
        message = error_message(exc)
        if exc.status in (429, 500, 502, 503, 504):
            return TransientError(f"Kubernetes failed while {doing}: {message}")
        if exc.status in (401, 403):
            return LaunchError(f"Kubernetes refused {doing}: {message}")
        return LaunchError(f"Kubernetes rejected {doing}: {message}")
    return TransientError(f"cannot reach the Kubernetes API while {doing}: {exc}")


API_ERRORS = (ApiException, urllib3.exceptions.HTTPError)

# kind -> (API class, create method, namespaced)
CREATE = {
    "Namespace": ("core", "create_namespace", False),
    "ResourceQuota": ("core", "create_namespaced_resource_quota", True),
    "NetworkPolicy": ("networking", "create_namespaced_network_policy", True),
    "Service": ("core", "create_namespaced_service", True),
    "Pod": ("core", "create_namespaced_pod", True),
}


class Kube:
    """The few calls the runtimes make, each with the configured timeout."""

    def __init__(self, settings):
        client = api_client()
        self.core = kubernetes.client.CoreV1Api(client)
        self.networking = kubernetes.client.NetworkingV1Api(client)
        self.apps = kubernetes.client.AppsV1Api(client)
        self.timeout = settings.request_timeout

    def create(self, manifest):
        api, method, namespaced = CREATE[manifest["kind"]]
        call = getattr(getattr(self, api), method)
        args = (manifest["metadata"]["namespace"], manifest) if namespaced else (manifest,)
        return call(*args, _request_timeout=self.timeout)

    def _read(self, call, *args):
        """The object `call` reads, or None when it does not exist."""
        try:
            return call(*args, _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def read_namespace(self, name):
        return self._read(self.core.read_namespace, name)

    def list_namespaces(self, selector):
        return self.core.list_namespace(label_selector=selector, _request_timeout=self.timeout).items

    def delete_namespace(self, name):
        """Ask for the namespace's deletion; True when it existed. Kubernetes deletes its content."""
        try:
            self.core.delete_namespace(name, propagation_policy="Background", _request_timeout=self.timeout)
        except ApiException as exc:
            # 409: already terminating
            if exc.status in (404, 409):
                return exc.status == 409
            raise
        return True

    def read_pod(self, namespace, name):
        return self._read(self.core.read_namespaced_pod, name, namespace)

    def list_pods(self, selector, namespace=None):
        """The pods `selector` selects, in `namespace` or in every namespace."""
        if namespace:
            return self.core.list_namespaced_pod(namespace, label_selector=selector, _request_timeout=self.timeout).items
        return self.core.list_pod_for_all_namespaces(label_selector=selector, _request_timeout=self.timeout).items

    # the pre-pull DaemonSets (apps/v1), apart from CREATE: instances never hold one

    def create_daemon_set(self, manifest):
        return self.apps.create_namespaced_daemon_set(manifest["metadata"]["namespace"], manifest,
                                                      _request_timeout=self.timeout)

    def read_daemon_set(self, namespace, name):
        return self._read(self.apps.read_namespaced_daemon_set, name, namespace)

    def update_daemon_set(self, manifest):
        """Bring an existing DaemonSet to `manifest` (a merge patch: its pod template is replaced whole)."""
        meta = manifest["metadata"]
        body = {"metadata": {"labels": meta["labels"], "annotations": meta["annotations"]},
                "spec": {"template": manifest["spec"]["template"]}}
        return self.apps.patch_namespaced_daemon_set(meta["name"], meta["namespace"], body,
                                                     _content_type="application/merge-patch+json",
                                                     _request_timeout=self.timeout)

    def delete_daemon_set(self, namespace, name):
        """Delete the DaemonSet and (in the background) its pods; False when it was gone."""
        try:
            self.apps.delete_namespaced_daemon_set(name, namespace, propagation_policy="Background",
                                                   _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True
