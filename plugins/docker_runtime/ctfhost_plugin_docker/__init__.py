"""ctfhost runtime "docker": one hardened container per instance on the local engine."""

import logging

from ctfhost import hookimpl
from ctfhost.hooktypes import Backend, RuntimeState

from ctfhost_plugin_docker import containers
from ctfhost_plugin_docker.options import allowed_capabilities, validate_options

__version__ = "0.1.0"

RUNTIME = "docker"

log = logging.getLogger(__name__)


@hookimpl
def register_runtimes():
    return [RUNTIME]


@hookimpl
def check_runtime(runtime, worker):
    if runtime != RUNTIME:
        return None
    return containers.engine_problem()


@hookimpl
def validate_challenge(challenge):
    if challenge.runtime != RUNTIME:
        return None
    allowed = allowed_capabilities(containers.setting("ALLOWED_CAPABILITIES", ""))
    errors = validate_options(challenge.options, allowed)
    return {"extra_config": errors} if errors else None


@hookimpl
def launch(challenge, instance, worker):
    if challenge.runtime != RUNTIME:
        return None
    port = containers.run(challenge, instance, worker)
    return Backend(f"{worker.address}:{port}", scheme="tcp" if challenge.protocol == "tcp" else "http")


@hookimpl
def inspect(instance, worker):
    if instance.runtime != RUNTIME:
        return None
    alive, reason = containers.state(instance.id)
    return RuntimeState(alive, reason)


@hookimpl
def destroy(instance, worker):
    if instance.runtime != RUNTIME:
        return None
    containers.remove(instance.id)
    return True


@hookimpl
def reconcile(worker, runtime, instances):
    if runtime != RUNTIME:
        return None
    return containers.reconcile(worker.id, {instance.id for instance in instances})
