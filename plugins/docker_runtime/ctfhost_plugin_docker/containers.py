"""Docker engine access: run, inspect, remove and reconcile instance containers."""

import logging
import threading

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import LogConfig
from docker.utils import parse_repository_tag

from ctfhost.plugin_api import LaunchError, TransientError, plugin_setting

from ctfhost_plugin_docker.options import normalize_capability

log = logging.getLogger(__name__)

LABEL = "ctfhost.managed"

_client = None
_client_lock = threading.Lock()
_network_ready = set()


def client():
    """One Docker client per process; DOCKER_HOST and friends are honoured."""
    global _client
    with _client_lock:
        if _client is None:
            try:
                _client = docker.from_env(timeout=int(plugin_setting("DOCKER", "TIMEOUT", 60)))
            except DockerException as exc:
                raise TransientError(f"cannot reach the Docker engine: {exc}") from None
        return _client


def engine_problem():
    """None when the Docker engine answers, else why not."""
    try:
        client().ping()
    except (DockerException, TransientError, requests.exceptions.RequestException) as exc:
        return f"cannot reach the Docker engine: {exc}"
    return None


MAIN = "main"
# on main's container of an instance of several services: the other services, comma-separated
SERVICES_LABEL = "ctfhost.services"


def expected_services(labels):
    """The services main's labels say the instance has beside it."""
    return [name for name in (labels or {}).get(SERVICES_LABEL, "").split(",") if name]


def container_name(instance_id):
    return f"ctfhost-{instance_id}"


def service_container_name(instance_id, service):
    return f"ctfhost-{instance_id}-{service}"


def instance_network_name(instance_id):
    """The bridge of one instance of several services (same name as its main container: another namespace)."""
    return f"ctfhost-{instance_id}"


def publish_ip():
    return plugin_setting("DOCKER", "PUBLISH_IP", "127.0.0.1")


def network_name():
    return plugin_setting("DOCKER", "NETWORK", "ctfhost-instances")


def ensure_network():
    """The shared bridge for instances, with inter-container traffic disabled (icc=false)."""
    name = network_name()
    if name in _network_ready:
        return name
    engine = client()
    if not engine.networks.list(names=[name]):
        try:
            engine.networks.create(
                name,
                driver="bridge",
                options={"com.docker.network.bridge.enable_icc": "false"},
                labels={LABEL: "true"},
                check_duplicate=True,
            )
        except APIError as exc:
            if not engine.networks.list(names=[name]):
                raise TransientError(f"cannot create network {name}: {exc.explanation or exc}") from None
    _network_ready.add(name)
    return name


PULL_POLICIES = ("missing", "never")


def pull_policy():
    """CTFHOST_DOCKER_PULL_POLICY: `missing` pulls an image the engine lacks, `never` only runs local ones."""
    policy = str(plugin_setting("DOCKER", "PULL_POLICY", "missing")).strip().lower()
    if policy not in PULL_POLICIES:
        raise LaunchError(f"CTFHOST_DOCKER_PULL_POLICY={policy!r} is not one of: {', '.join(PULL_POLICIES)}")
    return policy


def pull(image):
    if pull_policy() == "never":
        raise LaunchError(
            f"image {image!r} is not on this host, and this worker never pulls (CTFHOST_DOCKER_PULL_POLICY=never)"
        )
    log.info("image %s is not present; pulling it", image)
    try:
        repository, tag = parse_repository_tag(image)
        client().images.pull(repository, tag=tag or "latest")
    except (APIError, requests.exceptions.RequestException) as exc:
        detail = getattr(exc, "explanation", None) or str(exc)
        raise LaunchError(f"image {image!r} is not on this host and pulling it failed: {detail}") from None


def has_image(image):
    """Whether the engine holds `image`."""
    try:
        client().images.get(image)
    except ImageNotFound:
        return False
    except (APIError, requests.exceptions.RequestException) as exc:
        raise TransientError(f"cannot ask the Docker engine about image {image!r}: {_explain(exc)}") from None
    return True


def ensure_image(image):
    """Pull `image` unless the engine holds it (CTFHOST_DOCKER_PULL_POLICY applies); LaunchError with the reason."""
    if not has_image(image):
        pull(image)


def _labels(challenge, instance, worker):
    return {
        LABEL: "true",
        "ctfhost.runtime": "docker",
        "ctfhost.instance": instance.id,
        "ctfhost.challenge": challenge.id,
        "ctfhost.team": instance.team_id,
        "ctfhost.worker": worker.id,
    }


def _hardened(options, cpu_count, memory_mb):
    """What every container of an instance gets: limits, no new privileges, no capabilities but those allowed."""
    kwargs = {
        "nano_cpus": int(cpu_count * 1e9),
        "mem_limit": f"{memory_mb}m",
        "memswap_limit": f"{memory_mb}m",
        "pids_limit": int(plugin_setting("DOCKER", "PIDS_LIMIT", 256)),
        "security_opt": ["no-new-privileges:true"],
        "cap_drop": ["ALL"],
        "cap_add": [normalize_capability(c) for c in options.get("cap_add", [])] or None,
        "read_only": bool(options.get("read_only", False)),
        "log_config": LogConfig(type="json-file", config={"max-size": "1m", "max-file": "2"}),
    }
    for key in ("command", "entrypoint"):
        if key in options:
            kwargs[key] = options[key]
    if "tmpfs" in options:
        kwargs["tmpfs"] = options["tmpfs"]
    elif kwargs["read_only"]:
        kwargs["tmpfs"] = {"/tmp": "rw,nosuid,nodev,size=64m"}
    for key in ("user", "working_dir"):
        if key in options:
            kwargs[key] = options[key]
    return kwargs


def _environment(options, instance, given=None):
    env = dict(options.get("env") or options.get("environment") or {})
    env.update(given or {})
    if instance.flag:
        env["FLAG"] = instance.flag  # the instance's own flag wins over a static one in env
    return env


def _create_kwargs(challenge, instance, worker, network=None):
    """The main container: alone on the shared bridge, or `main` in the instance's own network."""
    options = challenge.options
    kwargs = _hardened(options, challenge.cpu_count, challenge.memory_mb)
    kwargs.update({
        "image": challenge.image,
        "name": container_name(instance.id),
        "detach": True,
        "labels": _labels(challenge, instance, worker),
        "environment": _environment(options, instance),
        # the engine picks a free host port for each; they are read back after start
        "ports": _published_ports([challenge.port, *(endpoint["port"] for endpoint in challenge.exposed)]),
        "network": network or ensure_network(),
        "hostname": "challenge",
    })
    if network:
        kwargs["labels"]["ctfhost.service"] = MAIN
        # what state() and reconcile expect beside main
        kwargs["labels"][SERVICES_LABEL] = ",".join(challenge.service_specs)
        kwargs["hostname"] = MAIN
        kwargs["networking_config"] = {network: client().api.create_endpoint_config(aliases=[MAIN])}
    return kwargs


def _published_ports(ports):
    """The `ports` argument publishing each container port on a free host port of CTFHOST_DOCKER_PUBLISH_IP."""
    return {f"{port}/tcp": (publish_ip(), None) for port in ports}


def _service_kwargs(challenge, instance, worker, service, spec, network):
    """A service beside `main`: in the instance's network, reachable there by its name; only its exposed ports
    are published (for the proxy)."""
    options = spec.get("options") or {}
    kwargs = _hardened(options, spec.get("cpu_count", 1), spec.get("memory_mb", 512))
    kwargs.update({
        "image": spec["image"],
        "name": service_container_name(instance.id, service),
        "detach": True,
        "labels": {**_labels(challenge, instance, worker), "ctfhost.service": service},
        "environment": _environment(options, instance, spec.get("environment")),
        "network": network,
        "networking_config": {network: client().api.create_endpoint_config(aliases=[service])},
        "hostname": service,
    })
    if spec.get("expose"):
        kwargs["ports"] = _published_ports(endpoint["port"] for endpoint in spec["expose"])
    if spec.get("command"):
        kwargs["command"] = spec["command"]
    if spec.get("entrypoint"):
        kwargs["entrypoint"] = spec["entrypoint"]
    return kwargs


def _explain(exc):
    return str(getattr(exc, "explanation", None) or exc)


def _create(challenge, instance, worker, kwargs=None):
    """Create the container; pull a missing image, replace a leftover of an earlier attempt."""
    engine = client()
    kwargs = kwargs or _create_kwargs(challenge, instance, worker)
    pulled = replaced = False
    while True:
        try:
            return engine.containers.create(**kwargs)
        except ImageNotFound:
            if pulled:
                raise LaunchError(f"image {kwargs['image']!r} is still missing after pulling it") from None
            pull(kwargs["image"])
            pulled = True
        except APIError as exc:
            if exc.status_code == 409 and not replaced:
                remove(instance.id)  # same name: left by an earlier attempt of this launch
                replaced = True
                continue
            raise


def run(challenge, instance, worker):
    """Start the instance's container; returns (the host port main's port is published on, {endpoint name: host
    port} of the other endpoints the challenge exposes).

    Any container left by an earlier attempt of the same launch is replaced.
    A challenge of several services gets a bridge network of its own; its
    services start first, in the order given, then `main`.
    """
    try:
        if challenge.is_multi_service:
            return _run_services(challenge, instance, worker)
        container = _create(challenge, instance, worker)
        try:
            container.start()
        except APIError as exc:
            container.remove(force=True)
            if exc.is_server_error() and not _bad_command(exc):
                raise TransientError(f"the container did not start: {_explain(exc)}") from None
            raise LaunchError(f"the container did not start: {_explain(exc)}") from None
        container.reload()
        try:
            return _host_ports(challenge, {MAIN: container})
        except LaunchError:
            alive, reason = _describe_state(container)
            if not alive:
                raise LaunchError(reason) from None
            raise
    except (LaunchError, TransientError):
        raise
    except APIError as exc:
        if exc.is_server_error():
            raise TransientError(f"the Docker engine failed: {_explain(exc)}") from None
        raise LaunchError(f"the Docker engine refused the container: {_explain(exc)}") from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise TransientError(f"cannot reach the Docker engine: {exc}") from None


def bridge_interface(instance_id):
    """The host interface of an instance's bridge: `ctfh` and 11 hex digits of its id (15 characters, the most
    Linux allows), so that one firewall rule on `ctfh+` covers every instance network (docs/security.md)."""
    return "ctfh" + instance_id.replace("-", "")[:11]


def _instance_network(challenge, instance, worker):
    """A fresh bridge for the instance: its services reach each other by name, nothing else reaches them."""
    engine = client()
    labels = {**_labels(challenge, instance, worker)}
    try:
        return engine.networks.create(
            instance_network_name(instance.id), driver="bridge", labels=labels, check_duplicate=True,
            options={"com.docker.network.bridge.name": bridge_interface(instance.id)},
        ).name
    except APIError as exc:
        if "address pool" in _explain(exc):
            raise LaunchError(
                "the Docker engine has no address range left for another instance network: give it more, smaller "
                "ones (`default-address-pools` in daemon.json, see docs/operations.md)") from None
        raise TransientError(f"cannot create the instance's network: {_explain(exc)}") from None


def _start(container, service):
    try:
        container.start()
    except APIError as exc:
        if exc.is_server_error() and not _bad_command(exc):
            raise TransientError(f"service {service!r} did not start: {_explain(exc)}") from None
        raise LaunchError(f"service {service!r} did not start: {_explain(exc)}") from None


def _run_services(challenge, instance, worker):
    """Every service of the instance in its own network, then `main`; the host port of main's port."""
    remove(instance.id)  # whatever an earlier attempt of this launch left
    try:
        network = _instance_network(challenge, instance, worker)
        started = {}
        for service, spec in challenge.service_specs.items():
            kwargs = _service_kwargs(challenge, instance, worker, service, spec, network)
            started[service] = _create(challenge, instance, worker, kwargs)
            _start(started[service], service)
        main = _create(challenge, instance, worker, _create_kwargs(challenge, instance, worker, network))
        _start(main, MAIN)
        started[MAIN] = main
        for service, container in started.items():
            if service == MAIN or challenge.service_specs[service].get("expose"):
                container.reload()
        try:
            return _host_ports(challenge, started)
        except LaunchError:
            alive, reason = state(instance.id)
            if not alive:
                raise LaunchError(reason) from None
            raise
    except BaseException:
        remove(instance.id)
        raise


def _host_port(container, port, service):
    bindings = container.ports.get(f"{port}/tcp") or []
    if not bindings:
        where = "the container" if service == MAIN and "ctfhost.service" not in (container.labels or {}) \
            else f"service {service!r}"
        raise LaunchError(f"{where} publishes no port for {port}/tcp")
    return int(bindings[0]["HostPort"])


def _host_ports(challenge, containers):
    """(main's host port, {endpoint name: host port}) read from the started `containers` ({service: container})."""
    main = _host_port(containers[MAIN], challenge.port, MAIN)
    return main, {endpoint["name"]: _host_port(containers[endpoint["service"]], endpoint["port"], endpoint["service"])
                  for endpoint in challenge.endpoint_specs}


def _bad_command(exc):
    text = _explain(exc).lower()
    return "executable file not found" in text or "no such file or directory" in text or "permission denied" in text


def _tail_logs(container, lines=5):
    try:
        text = container.logs(tail=lines).decode("utf-8", "replace").strip()
    except (APIError, requests.exceptions.RequestException):
        return ""
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())[-500:]


def state(instance_id):
    """(alive, reason) for the instance's container, or for every container of an instance of several services."""
    engine = client()
    try:
        container = engine.containers.get(container_name(instance_id))
    except NotFound:
        return False, "the container is gone"
    labels = container.labels or {}
    if labels.get("ctfhost.service") is None:
        return _describe_state(container)
    alive, reason = _describe_state(container)
    if not alive:
        return False, f"service 'main': {reason}"
    # several services: the first one down or gone names the instance's state
    found = {other.labels.get("ctfhost.service"): other
             for other in engine.containers.list(all=True, filters={"label": f"ctfhost.instance={instance_id}"})}
    for service in expected_services(labels):
        if service not in found:
            return False, f"service {service!r}: the container is gone"
        alive, reason = _describe_state(found[service])
        if not alive:
            return False, f"service {service!r}: {reason}"
    return True, None


def _describe_state(container):
    status = container.attrs.get("State", {})
    if status.get("Running") or status.get("Status") in ("created", "running", "restarting"):
        return True, None
    code = status.get("ExitCode")
    reason = f"the container exited with code {code}"
    if status.get("OOMKilled"):
        reason += " (killed: out of memory)"
    if status.get("Error"):
        reason += f": {status['Error']}"
    logs = _tail_logs(container)
    if logs:
        reason += f"; last output: {logs}"
    return False, reason


def remove(instance_id):
    """Remove the instance's container if it exists (idempotent)."""
    engine = client()
    try:
        engine.containers.get(container_name(instance_id)).remove(force=True, v=True)
    except NotFound:
        pass
    except APIError as exc:
        # another process is removing it: go on with the rest (services, network)
        if not ("removal of container" in _explain(exc) and "already in progress" in _explain(exc)):
            raise
    for container in engine.containers.list(
        all=True, sparse=True, filters={"label": f"ctfhost.instance={instance_id}"}
    ):
        try:
            container.remove(force=True, v=True)
        except NotFound:
            pass
    for network in engine.networks.list(filters={"label": f"ctfhost.instance={instance_id}"}):
        _remove_network(network)


def _remove_network(network):
    try:
        network.remove()
    except NotFound:
        pass
    except APIError as exc:
        # a container still attached (being removed by another process): the next destroy or reconcile ends it
        log.warning("could not remove network %s: %s", network.name, _explain(exc))


def reconcile(worker_id, keep_ids):
    """Remove this worker's containers not in keep_ids; return kept ids whose container is not running."""
    engine = client()
    found = {}  # instance id -> {service ("main" for a single container): (state, labels)}
    # sparse: no per-container inspect, so a container removed meanwhile is no error
    for container in engine.containers.list(
        all=True,
        sparse=True,
        filters={"label": [f"{LABEL}=true", "ctfhost.runtime=docker", f"ctfhost.worker={worker_id}"]},
    ):
        labels = container.attrs.get("Labels") or {}
        instance_id = labels.get("ctfhost.instance")
        if instance_id in keep_ids:
            found.setdefault(instance_id, {})[labels.get("ctfhost.service", MAIN)] = (container.status, labels)
            continue
        log.info("reconcile: removing container %s of inactive instance %s", container.name, instance_id)
        try:
            container.remove(force=True, v=True)
        except NotFound:
            pass
    for network in engine.networks.list(
        filters={"label": [f"{LABEL}=true", "ctfhost.runtime=docker", f"ctfhost.worker={worker_id}"]},
    ):
        if (network.attrs.get("Labels") or {}).get("ctfhost.instance") not in keep_ids:
            log.info("reconcile: removing network %s of an inactive instance", network.name)
            _remove_network(network)
    return [i for i in keep_ids if not _all_up(found.get(i, {}))]


def _all_up(services):
    """Main is up and so is every service its labels name."""
    up = ("created", "running", "restarting")
    main = services.get(MAIN)
    if main is None or main[0] not in up:
        return False
    return all(services.get(name, ("gone",))[0] in up for name in expected_services(main[1]))
