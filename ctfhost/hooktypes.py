"""Values that hooks exchange with the core: backends, runtime states, access decisions."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backend:
    """Where an instance listens, as the proxy reaches it.

    ``address`` is ``host:port``; ``scheme`` is how the proxy talks to it:
    ``http`` or ``tcp``. ``probe=False`` tells the core not to probe the
    address from the worker before marking the instance running: the runtime
    has already waited for readiness itself (a Kubernetes readiness probe),
    or the worker cannot reach the address (an in-cluster Service name).
    """

    address: str
    scheme: str = "http"
    probe: bool = True

    @property
    def url(self):
        return f"{self.scheme}://{self.address}"


@dataclass(frozen=True)
class RuntimeState:
    """What a runtime knows about an instance's resources right now."""

    alive: bool
    reason: str | None = None


@dataclass(frozen=True)
class AccessDecision:
    """The answer to a forward-auth request.

    ``allowed`` lets the request through (2xx). Otherwise ``status``,
    ``headers`` and ``body`` are returned to the browser as they are.
    ``headers`` on an allowed decision are copied to the backend request.
    """

    allowed: bool
    status: int = 200
    headers: dict = field(default_factory=dict)
    body: str = ""

    @classmethod
    def allow(cls, **headers):
        return cls(True, 200, dict(headers))

    @classmethod
    def deny(cls, status=401, body="", **headers):
        return cls(False, status, dict(headers), body)


class LaunchError(Exception):
    """A launch failed for a reason worth showing the player and operator; no retry."""


class TransientError(Exception):
    """A step failed for a passing reason (engine busy, network blip); the job is retried."""


# extra_config keys the core reads itself; runtime plugins accept them too.
CORE_OPTIONS = frozenset({"readiness_timeout"})
