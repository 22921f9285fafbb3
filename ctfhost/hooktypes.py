"""Values that hooks exchange with the core: backends, runtime states, access decisions, option schemas."""

from dataclasses import dataclass, field

from marshmallow import RAISE, Schema, fields
from marshmallow.validate import Validator


@dataclass(frozen=True)
class Backend:
    """Where an instance listens, as the proxy reaches it.

    ``address`` is ``host:port``; ``scheme`` is how the proxy talks to it:
    ``http`` or ``tcp``. ``probe=False`` tells the core not to probe the
    address from the worker before marking the instance running: the runtime
    has already waited for readiness itself (a Kubernetes readiness probe),
    or the worker cannot reach the address (an in-cluster Service name).

    ``endpoints`` maps the name of each endpoint the challenge exposes
    beside its main port (``challenge.endpoint_specs``) to its own Backend:
    a runtime that declares ``supports_endpoints`` returns one for every
    name. The core records them, probes them like the main one, and the
    proxy routes each at a hostname of its own.
    """

    address: str
    scheme: str = "http"
    probe: bool = True
    endpoints: dict = field(default_factory=dict, hash=False)

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


class RuntimeOptions(Schema):
    """Base of the marshmallow schema declaring a runtime's ``extra_config`` keys.

    The core validates a challenge's options against the runtime's schema
    (with the core's own keys added) and refuses keys it does not declare.
    A field's ``metadata["description"]`` documents it; ``metadata["must_be"]``
    turns every error of the field, of its items and of marshmallow's own
    validators on them into one message, ``"<key> must be <must_be>"``.
    Validator functions raise their own full messages.
    """

    # True when the runtime runs a challenge's `services` (each in the instance's private network, reachable by
    # name, FLAG in each, every one removed with the instance); the core refuses `services` for other runtimes
    supports_services = False
    # True when the runtime publishes the endpoints a challenge exposes beside its main port (`expose`, and a
    # service's `expose` where it runs services): its launch returns a Backend for each in Backend.endpoints
    supports_endpoints = False

    class Meta:
        unknown = RAISE

    def on_bind_field(self, field_name, field_obj):
        must_be = field_obj.metadata.get("must_be")
        if must_be:
            # fields and validators str.format their messages: keep a literal brace
            message = f"{field_name} must be {must_be}".replace("{", "{{").replace("}", "}}")
            for bound in (field_obj, *_item_fields(field_obj)):
                bound.error_messages = dict.fromkeys(bound.error_messages, message)
                for validator in bound.validators:
                    if isinstance(validator, Validator):
                        validator.error = message


def _item_fields(field_obj):
    items = [getattr(field_obj, name, None) for name in ("inner", "key_field", "value_field")]
    return [item for item in items if isinstance(item, fields.Field)]


class Checked(fields.Field):
    """A value kept as it is, accepted when ``check(value)`` is true (JSON types a marshmallow field would coerce)."""

    default_error_messages = {"invalid": "Invalid value."}

    def __init__(self, check, **kwargs):
        super().__init__(**kwargs)
        self.check = check

    def _deserialize(self, value, attr, data, **kwargs):
        if not self.check(value):
            raise self.make_error("invalid")
        return value


def _seconds(value):
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 < value <= 3600


class CoreOptions(RuntimeOptions):
    """The ``extra_config`` keys the core reads itself, accepted for every runtime."""

    readiness_timeout = Checked(
        _seconds,
        metadata={
            "description": "seconds the instance may take to accept connections "
            "(default CTFHOST_READINESS_TIMEOUT_SECONDS)",
            "must_be": "a number of seconds between 0 and 3600",
        },
    )


# extra_config keys the core reads itself; runtime plugins accept them too.
CORE_OPTIONS = frozenset(CoreOptions().fields)
