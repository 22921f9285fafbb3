"""The extra_config keys a Kubernetes challenge may set, declared as a schema the core validates with."""

from ctfhost.plugin_api import Checked, RuntimeOptions


def _is_env(value):
    return isinstance(value, dict) and all(
        isinstance(k, str) and k and "=" not in k and isinstance(v, str) for k, v in value.items()
    )


def _is_str_list(value):
    return isinstance(value, list) and bool(value) and all(isinstance(item, str) for item in value)


def _is_bool(value):
    return isinstance(value, bool)


def _field(check, description, must_be=None):
    return Checked(check, metadata={"description": description, "must_be": must_be or description})


class KubeOptions(RuntimeOptions):
    """extra_config of a kctf or kata-firecracker challenge."""

    supports_services = True
    # each endpoint of `expose` (main's, a service's) is a Service `endpoint-<name>` of its own (manifests.build)
    supports_endpoints = True

    env = _field(
        _is_env,
        "an object of environment variables (string values)",
        "an object of environment variables (string values), names without '='",
    )
    command = _field(_is_str_list, "a non-empty list of strings: the container's entrypoint")
    args = _field(_is_str_list, "a non-empty list of strings: the container's arguments")
    internet = _field(
        _is_bool, "true to let the pod reach the internet (never the cluster or private ranges)", "true or false"
    )
