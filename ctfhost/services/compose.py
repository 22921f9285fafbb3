"""A docker-compose file as a ctfhost challenge: what maps onto a challenge of several services, and what is refused.

    x-ctfhost:                 # optional; what compose cannot say
      main: web                # the service players reach (default: the only service, else the first that
                               # publishes a port, else the first that exposes one)
      port: 8080               # main's port (default: the first of its `expose`/`ports`)
      protocol: http           # http (default) or tcp
      expose:                  # more endpoints: service -> [{name, port, protocol}]
        web: [{name: api, port: 8081}]
      flag_template: "flag{{{hex:16}}}"   # and ttl_seconds, max_renewals: challenge fields
    services:
      web: {image: ..., environment: [...], depends_on: [db]}
      db: {image: ..., mem_limit: 1g}

Keys ctfhost cannot honour safely (`build`, `privileged`, volumes, `network_mode`, `devices`, extra
capabilities, ...) are refused, one message per key naming the service; nothing is created from a file with
any problem. Keys without effect on an instance (`restart`, `container_name`, `labels`, `logging`) are
ignored.
"""

import math
import re
import shlex

import yaml

from ctfhost.limits import CPU_COUNTS, MEMORY_SIZES

# keys of a service that map onto the challenge
MAPPED = {"image", "command", "entrypoint", "environment", "expose", "ports", "mem_limit", "deploy", "depends_on",
          "cap_add", "cap_drop", "read_only", "tmpfs", "user", "working_dir", "cpus", "x-ctfhost"}
# keys that change nothing an instance needs (its containers are ctfhost's: names, restarts and labels are ours)
IGNORED = {"restart", "container_name", "labels", "logging", "stop_signal", "stop_grace_period", "hostname"}
WHY = {
    "build": "ctfhost runs images from a registry: build and push the image, then name it in `image`",
    "privileged": "a privileged container owns the host",
    "volumes": "instances get no host or shared volumes (use tmpfs for scratch space)",
    "network_mode": "each instance has a network of its own",
    "networks": "each instance has a network of its own, where every service reaches the others by name",
    "devices": "instances get no host devices",
    "pid": "instances do not share a PID namespace with the host",
    "ipc": "instances do not share IPC with the host",
    "security_opt": "ctfhost sets the security options (no-new-privileges) itself",
    "sysctls": "sysctls are not available to instances",
    "userns_mode": "instances keep the engine's user namespace setting",
    "extra_hosts": "services reach each other by name; other hosts are not added",
    "dns": "instances use the engine's DNS",
    "env_file": "files on the importing machine are not read: list the variables in `environment`",
    "secrets": "use `environment` (FLAG holds the instance's flag)",
    "configs": "bake configuration into the image",
    "healthcheck": "ctfhost checks readiness itself (main's port answers, every service up)",
    "links": "services reach each other by name already",
    "external_links": "instances reach nothing outside themselves",
    "init": "not available",
    "shm_size": "not available",
    "ulimits": "ctfhost sets the limits (PIDs, memory) itself",
    "mem_reservation": "not available (use mem_limit)",
    "memswap_limit": "swap is never given",
    "oom_kill_disable": "not available",
    "platform": "not available",
    "profiles": "not available",
    "scale": "one container per service and instance",
    "stdin_open": "not available",
    "tty": "not available",
    "cgroup_parent": "not available",
    "runtime": "the runtime is the challenge's (--runtime)",
}
TOP_LEVEL = {"services", "version", "name", "x-ctfhost"}
CHALLENGE_FIELDS = ("flag_template", "ttl_seconds", "max_renewals")


class ComposeError(ValueError):
    """The file cannot be a challenge: `problems` lists every reason, each naming the service and key."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


VARIABLE = re.compile(r"\$(\{|[A-Za-z_])")


def _literal(text, where, problems):
    """`text` as compose would pass it, `$$` being `$`; a variable (`$NAME`, `${NAME:-x}`) is refused: the
    importing machine's environment is not read, and an instance would get the text as written."""
    text = str(text)
    if VARIABLE.search(text.replace("$$", "")):
        problems.append(f"{where}: {text!r} uses a variable; ctfhost does not interpolate them: write the value "
                        "(`$$` for a literal `$`)")
    return text.replace("$$", "$")


def _argv(value, where, problems):
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return [_literal(part, where, problems) for part in shlex.split(value)]
        except ValueError as exc:
            problems.append(f"{where}: cannot split {value!r} into arguments: {exc}")
            return None
    if isinstance(value, list) and all(isinstance(item, (str, int, float)) for item in value):
        return [_literal(item, where, problems) for item in value]
    problems.append(f"{where}: must be a string or a list of strings")
    return None


def _environment(value, where, problems):
    if value is None:
        return {}
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = []
        for entry in value:
            if not isinstance(entry, str) or "=" not in entry:
                problems.append(f"{where}: {entry!r} has no value (NAME=value; the importing machine's environment "
                                "is not read)")
                continue
            items.append(entry.split("=", 1))
    else:
        problems.append(f"{where}: must be a list of NAME=value or a mapping")
        return {}
    result = {}
    for name, item in items:
        if item is None:
            problems.append(f"{where}: {name} has no value (the importing machine's environment is not read)")
        elif isinstance(item, (dict, list)):
            problems.append(f"{where}: {name} must be a string")
        else:
            result[str(name)] = _literal("true" if item is True else "false" if item is False else item,
                                         f"{where}.{name}", problems)
    return result


def _container_ports(service, where, problems):
    """The container ports a service's `ports` and `expose` name, in order (published ones first: what a
    compose user means players to reach)."""
    found = []
    for key in ("ports", "expose"):
        entries = service.get(key) or []
        if not isinstance(entries, list):
            entries = [entries]  # `expose: 3000` or `ports: "8080"`
        for entry in entries:
            if isinstance(entry, dict):  # long syntax: {target: 80, published: 8080}
                port = entry.get("target")
            else:
                text = str(entry).split("/", 1)[0]
                port = text.rsplit(":", 1)[-1]
            if "-" in str(port):
                problems.append(f"{where}.{key}: port ranges ({entry!r}) are not supported")
                continue
            try:
                number = int(port)
            except (TypeError, ValueError):
                problems.append(f"{where}.{key}: {entry!r} is not a port")
                continue
            if number not in found:
                found.append(number)
    return found


def _bytes(value):
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", str(value).lower())
    if not match:
        return None
    number, unit = float(match.group(1)), match.group(2)
    return number * 1024 ** " kmgt".index(unit or " ")


def _limits(service, where, problems):
    """(cpu_count, memory_mb): compose's limits rounded up to what ctfhost offers."""
    limits, key = service.get("deploy") or {}, "deploy"
    for inner in ("resources", "limits"):
        if not isinstance(limits, dict):
            break
        limits, key = limits.get(inner) or {}, inner
    if not isinstance(limits, dict):
        problems.append(f"{where}.deploy: `{key}` must be a mapping")
        limits = {}
    memory = service.get("mem_limit", limits.get("memory"))
    cpus = service.get("cpus", limits.get("cpus"))
    memory_mb = 512
    if memory is not None:
        size = _bytes(memory)
        if size is None:
            problems.append(f"{where}.mem_limit: {memory!r} is not a size (e.g. 512m, 1g)")
        else:
            fitting = [mb for mb in MEMORY_SIZES if mb * 1024 * 1024 >= size]
            if not fitting:
                problems.append(f"{where}.mem_limit: {memory} is more than the largest size ctfhost gives (2048 MB)")
            else:
                memory_mb = fitting[0]
    cpu_count = 1
    if cpus is not None:
        try:
            wanted = float(cpus)
        except (TypeError, ValueError):
            problems.append(f"{where}.cpus: {cpus!r} is not a number")
        else:
            fitting = [count for count in CPU_COUNTS if count >= math.ceil(wanted - 1e-9)]
            if not fitting:
                problems.append(f"{where}.cpus: {cpus} is more than ctfhost gives (4)")
            else:
                cpu_count = fitting[0]
    return cpu_count, memory_mb


def _depends_on(service, where, names, problems):
    value = service.get("depends_on") or []
    if isinstance(value, dict):
        for needed, condition in value.items():
            wanted = (condition or {}).get("condition", "service_started") if isinstance(condition, dict) else None
            if wanted != "service_started":
                problems.append(f"{where}.depends_on.{needed}: only `condition: service_started` is honoured "
                                "(services run for the instance's life; ctfhost checks readiness itself)")
        value = list(value)
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        problems.append(f"{where}.depends_on: must be a list or a mapping of service names")
        return []
    unknown = [name for name in value if name not in names]
    if unknown:
        problems.append(f"{where}.depends_on: no service named {', '.join(map(str, unknown))}")
    return [name for name in value if name in names]


def _start_order(dependencies, main, problems):
    """Services other than main, each after what it depends on (compose's order otherwise); main last."""
    order, visiting = [], set()

    def visit(name, path):
        if name in order:
            return
        if name in visiting:
            problems.append(f"services: depends_on makes a cycle: {' -> '.join(path + [name])}")
            return
        visiting.add(name)
        for needed in dependencies[name]:
            if needed == main and name != main:
                problems.append(f"services.{name}.depends_on: {main!r} is the main service, which starts last")
                continue
            visit(needed, path + [name])
        visiting.discard(name)
        order.append(name)

    for name in dependencies:
        if name != main:
            visit(name, [])
    visit(main, [])  # main's own dependencies must come first anyway
    return [name for name in order if name != main]


def _options(service, where, problems):
    """The runtime options a service's compose keys give (checked by the runtime when the challenge is saved)."""
    options = {}
    if service.get("cap_add"):
        if isinstance(service["cap_add"], list):
            options["cap_add"] = [str(cap) for cap in service["cap_add"]]
        else:
            problems.append(f"{where}.cap_add: must be a list of capabilities")
    # cap_drop: every capability is dropped anyway (those of cap_add are given back)
    if service.get("read_only") is not None:
        options["read_only"] = bool(service["read_only"])
    tmpfs = service.get("tmpfs")
    if tmpfs:
        paths = [tmpfs] if isinstance(tmpfs, str) else tmpfs
        if not isinstance(paths, list) or not all(isinstance(path, str) and path.startswith("/") for path in paths):
            problems.append(f"{where}.tmpfs: must be a path or a list of absolute paths")
        else:
            options["tmpfs"] = {path.split(":", 1)[0]: (path.split(":", 1)[1] if ":" in path else "")
                                for path in paths}
    for key in ("user", "working_dir"):
        if service.get(key) is not None:
            options[key] = str(service[key])
    return options


def challenge_from_compose(text, challenge_id, name, runtime="docker"):
    """The challenge a compose file describes, as the API takes it; raises ComposeError listing every problem."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ComposeError([f"not valid YAML: {exc}"]) from None
    if not isinstance(document, dict) or not isinstance(document.get("services"), dict) or not document["services"]:
        raise ComposeError(["a compose file needs `services`: a mapping of at least one service"])
    problems = [f"{key}: top-level `{key}` is not supported ({WHY.get(key, 'each instance has its own network and no volumes')})"
                for key in document if key not in TOP_LEVEL and not str(key).startswith("x-")]
    extension = document.get("x-ctfhost") or {}
    if not isinstance(extension, dict):
        problems.append("x-ctfhost: must be a mapping")
        extension = {}
    services = document["services"]
    for service_name, service in services.items():
        where = f"services.{service_name}"
        if not isinstance(service, dict):
            problems.append(f"{where}: must be a mapping")
            continue
        for key in service:
            if key in MAPPED or key in IGNORED:
                continue
            reason = WHY.get(key, "ctfhost cannot honour it safely")
            problems.append(f"{where}.{key}: not supported ({reason})")
        if "image" not in service:
            problems.append(f"{where}: needs `image`" + ("" if "build" in service else " (a registry reference)"))
    valid = {service_name: service for service_name, service in services.items() if isinstance(service, dict)}

    ports = {service_name: _container_ports(service, f"services.{service_name}", problems)
             for service_name, service in valid.items()}
    main = extension.get("main")
    if main is not None and not isinstance(main, str):
        problems.append("x-ctfhost.main: must be a service name")
        main = None
    elif main is None:
        # the only service; else the first that publishes a port (`ports`), else the first that exposes one
        publishing = [name for name in valid if valid[name].get("ports")] or [name for name in valid if ports[name]]
        main = next(iter(valid)) if len(valid) == 1 else (publishing[0] if publishing else None)
        if main is None:
            problems.append("x-ctfhost.main: name the service players reach (no service exposes or publishes a port)")
    elif main not in valid:
        problems.append(f"x-ctfhost.main: no service named {main!r}")
        main = None

    challenge = {"id": challenge_id, "name": name, "runtime": runtime}
    for key in CHALLENGE_FIELDS:
        if key in extension:
            challenge[key] = extension[key]
    unknown = sorted(set(extension) - {"main", "port", "protocol", "expose", *CHALLENGE_FIELDS})
    for key in unknown:
        problems.append(f"x-ctfhost.{key}: unknown key (known: main, port, protocol, expose, {', '.join(CHALLENGE_FIELDS)})")
    if main is not None:
        port = extension.get("port") or (ports[main][0] if ports[main] else None)
        if port is None:
            problems.append(f"x-ctfhost.port: the main service {main!r} exposes no port; name the one players reach")
        challenge["port"] = port
        challenge["protocol"] = extension.get("protocol", "http")

    dependencies = {service_name: _depends_on(service, f"services.{service_name}", valid, problems)
                    for service_name, service in valid.items()}
    order = _start_order(dependencies, main, problems) if main is not None else list(valid)
    extra = extension.get("expose") or {}
    if not isinstance(extra, dict):
        problems.append("x-ctfhost.expose: must map a service name to a list of {name, port, protocol}")
        extra = {}
    for service_name in extra:
        if service_name not in valid:
            problems.append(f"x-ctfhost.expose: no service named {service_name!r}")

    built = {}
    for service_name in [*order, main] if main is not None else order:
        service, where = valid[service_name], f"services.{service_name}"
        spec = {"image": service.get("image")}
        command = _argv(service.get("command"), f"{where}.command", problems)
        entrypoint = _argv(service.get("entrypoint"), f"{where}.entrypoint", problems)
        environment = _environment(service.get("environment"), f"{where}.environment", problems)
        cpu_count, memory_mb = _limits(service, where, problems)
        options = _options(service, where, problems)
        endpoints = extra.get(service_name) or []
        if service_name == main:
            challenge.update(image=spec["image"], cpu_count=cpu_count, memory_mb=memory_mb)
            config = dict(options)
            if environment:
                config["env"] = environment
            # docker's options follow Docker (command: CMD, entrypoint: ENTRYPOINT), the Kubernetes runtimes'
            # follow Kubernetes (command: ENTRYPOINT, args: CMD)
            names = ("command", "entrypoint") if runtime == "docker" else ("args", "command")
            if command:
                config[names[0]] = command
            if entrypoint:
                config[names[1]] = entrypoint
            challenge["extra_config"] = config
            challenge["expose"] = endpoints
            continue
        if command:
            spec["command"] = command
        if entrypoint:
            spec["entrypoint"] = entrypoint
        if environment:
            spec["environment"] = environment
        spec.update(cpu_count=cpu_count, memory_mb=memory_mb, options=options, expose=endpoints)
        built[service_name] = spec
    challenge["services"] = built
    if problems:
        raise ComposeError(problems)
    return challenge
