"""The runtime options a docker challenge may set in extra_config, declared as a schema the core validates with."""

from marshmallow import ValidationError, fields, validate, validates_schema

from ctfhost.plugin_api import Checked, RuntimeOptions, plugin_setting

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

ENV = "an object of environment variables (string values)"


def _is_command(value):
    return bool(value) and (isinstance(value, str) or isinstance(value, list) and all(isinstance(v, str) for v in value))


def _is_tmpfs(value):
    return isinstance(value, dict) and all(isinstance(k, str) and k.startswith("/") and isinstance(v, str) for k, v in value.items())


def _env(description):
    return fields.Dict(
        keys=fields.String(validate=validate.Length(min=1)),
        values=fields.String(),
        metadata={"description": description, "must_be": ENV},
    )


def allowed_capabilities(setting):
    """The allow-list from CTFHOST_DOCKER_ALLOWED_CAPABILITIES (comma-separated), or Docker's defaults."""
    if not setting:
        return DEFAULT_ALLOWED
    return frozenset(normalize_capability(name.strip()) for name in setting.split(",") if name.strip())


def normalize_capability(name):
    name = name.upper()
    return name[4:] if name.startswith("CAP_") else name


def _check_capabilities(caps):
    unknown = sorted({c for c in caps if normalize_capability(c) not in CAPABILITIES})
    errors = []
    if unknown:
        errors.append(f"cap_add names unknown capabilities: {', '.join(unknown)}")
    allowed = allowed_capabilities(plugin_setting("DOCKER", "ALLOWED_CAPABILITIES", ""))
    refused = sorted({normalize_capability(c) for c in caps} & CAPABILITIES - set(allowed))
    if refused:
        errors.append(
            f"cap_add asks for capabilities this platform does not grant: {', '.join(refused)} "
            "(the operator can allow them with CTFHOST_DOCKER_ALLOWED_CAPABILITIES)"
        )
    if errors:
        raise ValidationError(errors)


def _is_bool(value):
    return isinstance(value, bool)


def _non_empty_string(description):
    return fields.String(
        validate=validate.Length(min=1), metadata={"description": description, "must_be": "a non-empty string"}
    )


class DockerOptions(RuntimeOptions):
    """extra_config of a docker challenge."""

    supports_services = True
    supports_endpoints = True

    env = _env(ENV)
    environment = _env("the same as env (docker SDK spelling)")
    command = Checked(_is_command, metadata={"description": "a string or a list of strings", "must_be": "a string or a list of strings"})
    entrypoint = Checked(_is_command, metadata={"description": "replaces the image's ENTRYPOINT: a string or a list of strings",
                                                "must_be": "a string or a list of strings"})
    cap_add = fields.List(
        fields.String(),
        validate=_check_capabilities,
        metadata={
            "description": "a list of Linux capabilities to add back, e.g. [\"NET_BIND_SERVICE\"] "
            "(within CTFHOST_DOCKER_ALLOWED_CAPABILITIES)",
            "must_be": "a list of Linux capabilities to add back, e.g. [\"NET_BIND_SERVICE\"]",
        },
    )
    read_only = Checked(
        _is_bool, metadata={"description": "true to mount the root filesystem read-only", "must_be": "true or false"}
    )
    tmpfs = Checked(
        _is_tmpfs,
        metadata={
            "description": "an object mapping a path to tmpfs mount options, e.g. {\"/tmp\": \"size=64m\"}",
            "must_be": "an object mapping a path to tmpfs mount options, e.g. {\"/tmp\": \"size=64m\"}",
        },
    )
    user = _non_empty_string("the user to run as, e.g. \"1000:1000\"")
    working_dir = _non_empty_string("the working directory")

    @validates_schema
    def _env_once(self, data, **kwargs):
        if "env" in data and "environment" in data:
            raise ValidationError("give env or environment, not both")
