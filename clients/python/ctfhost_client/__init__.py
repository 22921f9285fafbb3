"""ctfhost-client: a typed Python SDK for ctfhost's REST API and live events, and the `ctfhost` command."""

from ctfhost_client.client import AdminClient, Client
from ctfhost_client.errors import (
    AnswerLost, Conflict, ConnectionFailed, CtfhostError, CtfhostVersionWarning, Forbidden, InstanceFailed,
    InstanceTimeout, Invalid, NotFound, RateLimited, ServerError, Unauthorized, Unavailable,
)
from ctfhost_client.events import EventStream
from ctfhost_client.models import (
    AccessLink, AuditEvent, Caller, Challenge, ChallengeStatus, Cluster, Endpoint, Event, Instance, Meta, NewToken,
    Operation, Page, Renewal, RestartOperation, Settings, Token, Verdict, Worker,
)
from ctfhost_client.transport import RetryPolicy
from ctfhost_client.version import __version__

__all__ = [
    "AccessLink", "AdminClient", "AnswerLost", "AuditEvent", "Caller", "Challenge", "ChallengeStatus", "Client",
    "Cluster", "Conflict", "ConnectionFailed", "CtfhostError", "CtfhostVersionWarning", "Endpoint", "Event",
    "EventStream", "Forbidden", "Instance", "InstanceFailed", "InstanceTimeout", "Invalid", "Meta", "NewToken",
    "NotFound", "Operation", "Page", "RateLimited", "Renewal", "RestartOperation", "RetryPolicy", "ServerError",
    "Settings", "Token", "Unauthorized", "Unavailable", "Verdict", "Worker", "__version__",
]
