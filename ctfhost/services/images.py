"""Container image references: the OCI/Docker grammar, and which registry a reference pulls from.

Checked when a challenge is saved, so `$(id)`, `UPPER` or `-v /:/host x`
is refused at once (422) instead of failing every launch later.
"""

import re
from typing import NamedTuple

from flask import current_app

# distribution/reference's grammar (github.com/distribution/reference, regexp.go)
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[_.]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
REFERENCE = re.compile(
    rf"^(?P<name>(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*))"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$"
)
MAX_NAME_LENGTH = 255
DOCKER_HUB = "docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}


class ImageReference(NamedTuple):
    registry: str
    path: str
    tag: str | None
    digest: str | None


def parse(reference):
    """The parts of an image reference; ValueError saying what is wrong with a bad one."""
    if not isinstance(reference, str) or not reference:
        raise ValueError("must be an image reference such as registry.example.com/team/web:1")
    match = REFERENCE.match(reference)
    first, _, rest = reference.partition("/")
    # a first component without '.', ':' or "localhost" is a Docker Hub path, and paths are lowercase
    if match and match.group("domain") is None and rest and _looks_like_domain(first):
        match = None
    if not match:
        hint = " (repository names are lowercase)" if reference.lower() != reference and REFERENCE.match(reference.lower()) else ""
        raise ValueError(
            f"{reference[:80]!r} is not a valid image reference{hint}; expected [registry[:port]/]name[:tag][@digest], "
            "e.g. registry.example.com/team/web:1"
        )
    if len(match.group("name")) > MAX_NAME_LENGTH:
        raise ValueError(f"the repository name is longer than {MAX_NAME_LENGTH} characters")
    domain = match.group("domain")
    if domain is None or not _looks_like_domain(domain):
        # "team/web": Docker Hub; a lowercase first part without '.' or ':' is a path, not a host
        registry, path = DOCKER_HUB, match.group("name")
    else:
        registry, path = domain.lower(), match.group("path")
    if registry in _HUB_ALIASES:
        registry = DOCKER_HUB
    return ImageReference(registry, path, match.group("tag"), match.group("digest"))


def _looks_like_domain(component):
    return "." in component or ":" in component or component == "localhost" or component.lower() != component


def allowed_registries():
    """CTFHOST_ALLOWED_REGISTRIES as a set of registry names, or None: any registry."""
    value = current_app.config.get("CTFHOST_ALLOWED_REGISTRIES") or ""
    names = {name.strip().lower() for name in value.split(",") if name.strip()}
    return {DOCKER_HUB if name in _HUB_ALIASES else name for name in names} or None


def problems(reference):
    """Messages for an image the platform will not run; empty when fine."""
    try:
        parsed = parse(reference)
    except ValueError as exc:
        return [str(exc)]
    allowed = allowed_registries()
    if allowed is not None and parsed.registry not in allowed:
        return [
            f"images from {parsed.registry} are not allowed here; allowed registries: {', '.join(sorted(allowed))} "
            "(CTFHOST_ALLOWED_REGISTRIES)"
        ]
    return []
