"""The runtime options a docker challenge may set in extra_config, and their checks."""

from ctfhost.hooktypes import CORE_OPTIONS

# Linux capabilities a challenge may add back (all are dropped by default)
CAPABILITIES = {
    "AUDIT_CONTROL", "AUDIT_READ", "AUDIT_WRITE", "BLOCK_SUSPEND", "BPF", "CHECKPOINT_RESTORE", "CHOWN",
    "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "IPC_LOCK", "IPC_OWNER", "KILL", "LEASE",
    "LINUX_IMMUTABLE", "MAC_ADMIN", "MAC_OVERRIDE", "MKNOD", "NET_ADMIN", "NET_BIND_SERVICE",
    "NET_BROADCAST", "NET_RAW", "PERFMON", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYSLOG",
    "SYS_ADMIN", "SYS_BOOT", "SYS_CHROOT", "SYS_MODULE", "SYS_NICE", "SYS_PACCT", "SYS_PTRACE",
    "SYS_RAWIO", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "WAKE_ALARM",
}

# What a challenge may add back unless the operator allows more
# (CTFHOST_DOCKER_ALLOWED_CAPABILITIES): Docker's own default set, so a
# challenge never gets more than a plain `docker run` would give it, less
# NET_RAW, which lets a container forge packets on the shared bridge
# (docs/security.md): an operator who wants it names it in the setting.
DEFAULT_ALLOWED = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
})

DOCKER_OPTIONS = {
    "env": "an object of environment variables (string values)",
    "environment": "the same as env (docker SDK spelling)",
    "command": "a string or a list of strings",
    "cap_add": "a list of Linux capabilities to add back, e.g. [\"NET_BIND_SERVICE\"]",
    "read_only": "true to mount the root filesystem read-only",
    "tmpfs": "an object mapping a path to tmpfs mount options, e.g. {\"/tmp\": \"size=64m\"}",
    "user": "the user to run as, e.g. \"1000:1000\"",
    "working_dir": "the working directory",
}

KNOWN = set(DOCKER_OPTIONS) | set(CORE_OPTIONS)


def _is_str_list(value):
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def allowed_capabilities(setting):
    """The allow-list from CTFHOST_DOCKER_ALLOWED_CAPABILITIES (comma-separated), or Docker's defaults."""
    if not setting:
        return DEFAULT_ALLOWED
    return frozenset(normalize_capability(name.strip()) for name in setting.split(",") if name.strip())


def normalize_capability(name):
    name = name.upper()
    return name[4:] if name.startswith("CAP_") else name


def validate_options(options, allowed_capabilities=DEFAULT_ALLOWED):
    """Messages for every problem in a docker challenge's options; empty when fine."""
    errors = []
    for key in sorted(set(options) - KNOWN):
        errors.append(f"unknown key {key!r}; the docker runtime accepts: {', '.join(sorted(KNOWN))}")
    for key in ("env", "environment"):
        env = options.get(key)
        if key in options and not (
            isinstance(env, dict) and all(isinstance(k, str) and k and isinstance(v, str) for k, v in env.items())
        ):
            errors.append(f"{key} must be {DOCKER_OPTIONS['env']}")
    if "env" in options and "environment" in options:
        errors.append("give env or environment, not both")
    command = options.get("command")
    if "command" in options and not (isinstance(command, str) and command or _is_str_list(command) and command):
        errors.append(f"command must be {DOCKER_OPTIONS['command']}")
    caps = options.get("cap_add")
    if "cap_add" in options:
        if not _is_str_list(caps):
            errors.append(f"cap_add must be {DOCKER_OPTIONS['cap_add']}")
        else:
            unknown = sorted({c for c in caps if normalize_capability(c) not in CAPABILITIES})
            if unknown:
                errors.append(f"cap_add names unknown capabilities: {', '.join(unknown)}")
            refused = sorted(
                {normalize_capability(c) for c in caps} & CAPABILITIES - set(allowed_capabilities)
            )
            if refused:
                errors.append(
                    f"cap_add asks for capabilities this platform does not grant: {', '.join(refused)} "
                    "(the operator can allow them with CTFHOST_DOCKER_ALLOWED_CAPABILITIES)"
                )
    if "read_only" in options and not isinstance(options["read_only"], bool):
        errors.append("read_only must be true or false")
    tmpfs = options.get("tmpfs")
    if "tmpfs" in options and not (
        isinstance(tmpfs, dict)
        and all(isinstance(k, str) and k.startswith("/") and isinstance(v, str) for k, v in tmpfs.items())
    ):
        errors.append(f"tmpfs must be {DOCKER_OPTIONS['tmpfs']}")
    for key in ("user", "working_dir"):
        if key in options and not (isinstance(options[key], str) and options[key]):
            errors.append(f"{key} must be a non-empty string")
    return errors
