"""deploy/kubernetes: valid for a current Kubernetes, and in step with what the runtimes do."""

import pathlib

import pytest
import yaml

from ctfhost_plugin_kctf.client import CREATE
from ctfhost_plugin_kctf.settings import DEFAULT_PROXY_NAMESPACE_SELECTOR, DEFAULT_PROXY_POD_SELECTOR
from ctfhost_plugin_kctf.testing import validate_strict

DEPLOY = pathlib.Path(__file__).parents[3] / "deploy" / "kubernetes"
MANIFESTS = sorted(DEPLOY.glob("*.yaml"))

# kind -> (API group, resource) for what the runtimes create
RESOURCES = {
    "Namespace": ("", "namespaces"),
    "ResourceQuota": ("", "resourcequotas"),
    "NetworkPolicy": ("networking.k8s.io", "networkpolicies"),
    "Service": ("", "services"),
    "Pod": ("", "pods"),
}


def documents(path):
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def everything():
    return [doc for path in MANIFESTS for doc in documents(path)]


def find(kind, name):
    (found,) = [doc for doc in everything() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return found


def test_the_manifests_are_there():
    assert {path.name for path in MANIFESTS} >= {
        "worker-rbac.yaml", "worker.yaml", "traefik.yaml", "runtimeclass-kata-fc.yaml",
    }


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_every_manifest_validates_strictly(path):
    for doc in documents(path):
        validate_strict(doc)


def granted(role):
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_the_worker_role_allows_every_call_the_runtimes_make():
    assert set(RESOURCES) == set(CREATE)
    needed = {(group, resource, "create") for group, resource in RESOURCES.values()}
    needed |= {("", "namespaces", verb) for verb in ("get", "list", "delete")}  # replace, reconcile, destroy
    needed |= {("", "pods", verb) for verb in ("get", "list")}  # readiness wait, reconcile
    role = find("ClusterRole", "ctfhost-worker")
    assert needed <= granted(role)
    # nothing that would let a worker read secrets or act on the cluster beyond its instances
    assert not {resource for _, resource, _ in granted(role)} & {"secrets", "*", "nodes", "clusterroles"}


def test_the_worker_role_allows_the_image_pre_pulls():
    needed = {("apps", "daemonsets", verb) for verb in ("create", "get", "patch", "delete")}
    needed |= {("", "namespaces", "create"), ("", "namespaces", "get"), ("", "pods", "list")}
    assert needed <= granted(find("ClusterRole", "ctfhost-worker"))


def test_the_worker_service_account_is_bound_and_used():
    binding = find("ClusterRoleBinding", "ctfhost-worker")
    assert binding["roleRef"]["name"] == "ctfhost-worker"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ctfhost-worker", "namespace": "ctfhost"}]
    worker = find("Deployment", "ctfhost-worker")
    spec = worker["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "ctfhost-worker"
    env = {item["name"]: item for item in spec["containers"][0]["env"]}
    assert env["CTFHOST_WORKER_ID"]["value"]  # a fixed id: namespaces are labelled with it


def test_traefik_pods_match_the_default_proxy_selectors():
    namespace_label = DEFAULT_PROXY_NAMESPACE_SELECTOR.split("=")
    pod_label = DEFAULT_PROXY_POD_SELECTOR.split("=")
    traefik = find("Deployment", "traefik")
    assert namespace_label == ["kubernetes.io/metadata.name", traefik["metadata"]["namespace"]]
    assert traefik["spec"]["template"]["metadata"]["labels"][pod_label[0]] == pod_label[1]
    args = traefik["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--providers.http.endpoint=$(CTFHOST_CONFIG_URL)" in args
    assert "--providers.http.headers.x-api-key=$(CTFHOST_API_KEY)" in args
