"""The extra_config keys a Kubernetes challenge may set, and their checks."""

from ctfhost.hooktypes import CORE_OPTIONS

KUBE_OPTIONS = {
    "env": "an object of environment variables (string values)",
    "command": "a non-empty list of strings: the container's entrypoint",
    "args": "a non-empty list of strings: the container's arguments",
    "internet": "true to let the pod reach the internet (never the cluster or private ranges)",
}

KNOWN = set(KUBE_OPTIONS) | set(CORE_OPTIONS)


def _is_str_list(value):
    return isinstance(value, list) and bool(value) and all(isinstance(item, str) for item in value)


def validate_options(options, runtime):
    """Messages for every problem in a challenge's options; empty when fine."""
    errors = [
        f"unknown key {key!r}; the {runtime} runtime accepts: {', '.join(sorted(KNOWN))}"
        for key in sorted(set(options) - KNOWN)
    ]
    env = options.get("env")
    if "env" in options and not (
        isinstance(env, dict)
        and all(isinstance(k, str) and k and "=" not in k and isinstance(v, str) for k, v in env.items())
    ):
        errors.append(f"env must be {KUBE_OPTIONS['env']}, names without '='")
    for key in ("command", "args"):
        if key in options and not _is_str_list(options[key]):
            errors.append(f"{key} must be {KUBE_OPTIONS[key]}")
    if "internet" in options and not isinstance(options["internet"], bool):
        errors.append("internet must be true or false")
    return errors
