"""ctfhost runtime "docker": a hardened container per instance (per service, in a network of the instance's own,
for a challenge of several services) on the local engine."""

import logging

from ctfhost.plugin_api import Backend, RuntimeState, hookimpl

from ctfhost_plugin_docker import containers
from ctfhost_plugin_docker.options import DockerOptions

__version__ = "0.1.0"

RUNTIME = "docker"

log = logging.getLogger(__name__)


# The core calls the hooks below only for challenges and instances of this
# plugin's runtime: none of them checks the runtime's name.


@hookimpl
def register_runtimes():
    return [RUNTIME]


@hookimpl
def check_runtime(runtime, worker):
    return containers.engine_problem()


@hookimpl
def runtime_options(runtime):
    return DockerOptions


@hookimpl
def launch(challenge, instance, worker):
    port, endpoint_ports = containers.run(challenge, instance, worker)
    endpoints = {endpoint["name"]: Backend(f"{worker.address}:{endpoint_ports[endpoint['name']]}",
                                           scheme=endpoint["protocol"])
                 for endpoint in challenge.endpoint_specs}
    return Backend(f"{worker.address}:{port}", scheme="tcp" if challenge.protocol == "tcp" else "http",
                   endpoints=endpoints)


@hookimpl
def prepare_image(runtime, image, worker):
    containers.ensure_image(image)
    return True


@hookimpl
def image_state(runtime, image, worker):
    return "pulled" if containers.has_image(image) else "unpulled"


@hookimpl
def inspect(instance, worker):
    alive, reason = containers.state(instance.id)
    return RuntimeState(alive, reason)


@hookimpl
def destroy(instance, worker):
    containers.remove(instance.id)
    return True


@hookimpl
def reconcile(worker, runtime, instances):
    return containers.reconcile(worker.id, {instance.id for instance in instances})
