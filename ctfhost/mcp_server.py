"""MCP for agent harnesses: a companion ASGI process whose tools call the REST API in-process.

The official MCP SDK serves streamable HTTP as an ASGI app, and ctfhost is a
WSGI Flask app; rather than bridge the two in one server, `flask ctfhost mcp`
runs the SDK under uvicorn beside the API, at the same path prefix
(`/api/v1/mcp`), so one proxy rule routes it. Each tool is the REST request an
agent would otherwise send, dispatched through the Flask app in a worker
thread with the caller's own `Authorization` header: authentication, scopes,
validation, fair-use limits and audit stay in one place, the API. A thread is
held for one REST call only: start_instance waits between its reads on the
event loop, and the bearer-token check has threads of its own, so agents
waiting for launches never keep another request from being answered.

Only this module's functions touch the SDK (`mcp`, with `anyio`, `pydantic`,
`starlette` and `uvicorn` beside it), and they import it when called: the core
runs without the `mcp` extra.
"""

import json
import time
import types
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Annotated

from werkzeug.exceptions import HTTPException

from ctfhost import __version__
from ctfhost.api.auth import TEAM, authenticate

MCP_PATH = "/api/v1/mcp"
INSTALL_HINT = "pip install 'ctfhost[mcp]'"
DEFAULT_PORT = 5003
# between two reads of a pending instance: start_instance waits on the event loop, never in a worker thread
# (it does not use the API's ?wait=, which would hold a thread for the whole wait)
POLL_SECONDS = 0.5
MAX_START_TIMEOUT_SECONDS = 600
# REST calls running at once in one MCP process (each tool holds a thread for one REST call at a time)
THREADS = 100
# bearer-token checks running at once, on threads of their own: busy tools never delay authentication
AUTH_THREADS = 20
READ_SCOPE = "instances:read"
SLUG = r"^[a-z0-9][a-z0-9-]*[a-z0-9]$"
# headers of the MCP request that go on to the API: the proxy's (for CTFHOST_PROXY_COUNT) and the client's name
PASSED_HEADERS = ("User-Agent", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port",
                  "X-Forwarded-Prefix", "X-Real-Ip")
CALLER_KEY = "ctfhost.mcp.caller"


class MissingDependency(RuntimeError):
    """The `mcp` extra is not installed."""


class Refused(Exception):
    """An MCP HTTP request refused before any MCP session: a missing or wrong credential (401), or not a team token (403)."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status, self.message = status, message

    def body(self):
        return {"code": self.status, "status": HTTPStatus(self.status).phrase, "message": self.message}


class ToolFailure(Exception):
    """A tool's anticipated failure: the agent reads describe()."""

    def describe(self):
        return str(self)


class RestError(ToolFailure):
    """The API answered a tool's request with an error; its message is what the agent reads."""

    def __init__(self, status, body=None, retry_after=None):
        body = body if isinstance(body, dict) else {}
        self.status = status
        self.message = body.get("message") or HTTPStatus(status).phrase
        self.errors = body.get("errors")
        self.retry_after = retry_after
        super().__init__(self.describe())

    def describe(self):
        text = f"{self.status} {HTTPStatus(self.status).phrase}: {self.message}"
        if self.errors and self.status == 422:
            text += f" {json.dumps(self.errors, sort_keys=True)}"
        if self.retry_after:
            text += f" (retry after {self.retry_after} s)"
        return text


@dataclass(frozen=True)
class Caller:
    """The team behind an MCP request: its token as sent, and what the API should see of the request."""

    authorization: str
    team_id: str
    token_id: str
    remote_addr: str = "127.0.0.1"
    headers: dict = field(default_factory=dict)


def _message_of(exc):
    data = getattr(exc, "data", None) or {}
    return data.get("message") or exc.description


class Gateway:
    """Requests to the REST API through the WSGI app, in the calling thread (never on the event loop)."""

    def __init__(self, app):
        self.app = app

    def identify(self, headers, remote_addr):
        """The Caller of an MCP HTTP request; Refused when its credential is missing, wrong or not a team token."""
        authorization = headers.get("Authorization") or ""
        if not authorization:
            raise Refused(401, "missing credentials: send Authorization: Bearer <team token> (cth_...)")
        with self.app.test_request_context(MCP_PATH, method="POST", headers={"Authorization": authorization},
                                           environ_base={"REMOTE_ADDR": remote_addr}):
            try:
                principal = authenticate()
            except HTTPException as exc:
                raise Refused(exc.code, _message_of(exc)) from None
        if principal.kind != TEAM:
            raise Refused(403, "the MCP endpoint acts for one team: authenticate with a team token (cth_...), "
                               "not the admin token")
        return Caller(
            authorization=authorization,
            team_id=principal.team_id,
            token_id=principal.token_id,
            remote_addr=remote_addr,
            headers={name: headers[name] for name in PASSED_HEADERS if headers.get(name)},
        )

    def call(self, caller, method, path, body=None, query=None):
        """(status, JSON body) of a REST request made as `caller`; RestError for a 4xx or 5xx answer."""
        client = self.app.test_client(use_cookies=False)
        response = client.open(
            path, method=method, json=body, query_string=query,
            headers={**caller.headers, "Authorization": caller.authorization},
            environ_base={"REMOTE_ADDR": caller.remote_addr},
        )
        data = response.get_json(silent=True)
        if response.status_code >= 400:
            raise RestError(response.status_code, data, response.headers.get("Retry-After"))
        return response.status_code, data


# -- what each tool does: its REST calls, each in a worker thread, awaited on the event loop ----------


def _endpoint_view(endpoint):
    view = {"name": endpoint.get("name"), "protocol": endpoint.get("protocol"), "url": endpoint.get("url")}
    if endpoint.get("connection"):
        view["connect"] = endpoint["connection"]
    return view


def instance_view(instance):
    """The fields of an instance an agent needs, in one flat object."""
    endpoints = instance.get("endpoints") or [
        {"name": "main", "protocol": instance.get("protocol"), "url": instance.get("endpoint"),
         "connection": instance.get("connection")}
    ]
    view = {
        "id": instance["id"],
        "challenge_id": instance.get("challenge_id"),
        "status": instance.get("status"),
        "phase": instance.get("phase"),
        "endpoint": instance.get("endpoint"),
        "endpoints": [_endpoint_view(endpoint) for endpoint in endpoints],
        "expires_at": instance.get("expires_at"),
        "started_at": instance.get("started_at"),
        "renewals_left": instance.get("renewals_left"),
    }
    if instance.get("status") == "error":
        view["error"] = instance.get("public_error") or instance.get("error")
    return view


ACCESS_NOTE = ("HTTP endpoints sit behind the team's access check: open an endpoint's access_link once, within "
               "access_link_expires_in seconds, keeping its cookie (e.g. curl -c jar.txt -L '<access_link>'), then "
               "send that cookie to its url (curl -b jar.txt '<url>'). instance_status with access_links=true mints "
               "fresh links. TCP endpoints: use the `connect` commands (TLS with SNI).")


class Rest:
    """A tool call's REST requests, as its caller: each runs in a worker thread, awaited on the event loop."""

    def __init__(self, gateway, caller, in_thread, sleep):
        self.gateway, self.caller, self.in_thread, self.sleep = gateway, caller, in_thread, sleep

    async def __call__(self, method, path, body=None, query=None):
        return await self.in_thread(self.gateway.call, self.caller, method, path, body, query)


def lacks_read(exc):
    """Whether a RestError is the API's 403 for a token without `instances:read`."""
    return exc.status == 403 and (exc.errors or {}).get("scope") == READ_SCOPE


WRITE_ONLY_NOTE = (f"This token lacks the scope '{READ_SCOPE}', which start_instance needs to wait for the "
                   "instance to run and to mint access links: here is the launched instance as it stands, without "
                   f"access links (HTTP endpoints need one). With a token holding '{READ_SCOPE}' as well, "
                   "instance_status(id, access_links=true) follows it and mints them.")


async def add_access_links(rest, view):
    """Mint a single-use access link for each HTTP endpoint of a running instance."""
    expires_in = None
    for endpoint in view["endpoints"]:
        if endpoint["protocol"] == "http":
            _, link = await rest("POST", f"/api/v1/instances/{view['id']}/access", body={"endpoint": endpoint["name"]})
            endpoint["access_link"] = link["url"]
            expires_in = link.get("expires_in")
    if expires_in is not None:
        view["access_link_expires_in"] = expires_in
    view["note"] = ACCESS_NOTE
    return view


async def launch(rest, challenge_id):
    """POST /api/v1/instances (answered at once); the team's active instance if it has one."""
    # no team_id: a team token's launch is for its own team
    try:
        _, instance = await rest("POST", "/api/v1/instances", body={"challenge_id": challenge_id})
        return instance, False
    except RestError as exc:
        if exc.status != 409:
            raise
        # already running one (an agent retrying a start, or a harness reusing it); else the 409 stands
        try:
            _, instance = await rest("GET", f"/api/v1/instances/team/{rest.caller.team_id}/{challenge_id}")
        except RestError as lookup:
            if lacks_read(lookup):
                raise ToolFailure(f"{exc.describe()} (this token lacks the scope '{READ_SCOPE}' that start_instance "
                                  "needs to return the team's active instance)") from None
            raise exc from None
        return instance, True


async def start_and_wait(rest, challenge_id, timeout_seconds):
    """Launch (or find) the team's instance of a challenge and wait until it runs: its view with access links.

    Without `instances:read` (a token with `instances:write` only), the
    launched instance's view as the launch answered it, with a note: the
    launch succeeded, so this is no tool error.
    """
    deadline = time.monotonic() + timeout_seconds
    instance, reused = await launch(rest, challenge_id)
    try:
        instance = await wait_while_pending(rest, instance, deadline)
    except RestError as exc:
        if not lacks_read(exc):
            raise
        return {**instance_view(instance), "reused": reused, "note": WRITE_ONLY_NOTE}
    view = instance_view(instance)
    view["reused"] = reused
    if view["status"] == "pending":
        raise ToolFailure(f"instance {view['id']} of {challenge_id} is still pending after {timeout_seconds} s "
                          f"(phase {view['phase'] or 'queued'}); it keeps starting: call "
                          f"instance_status('{view['id']}') to follow it, or stop_instance")
    if view["status"] != "running":
        raise ToolFailure(f"instance {view['id']} of {challenge_id} failed to start (status {view['status']}): "
                          f"{view.get('error') or 'no reason given'}")
    try:
        return await add_access_links(rest, view)
    except RestError as exc:
        if not lacks_read(exc):
            raise
        return {**instance_view(instance), "reused": reused, "note": WRITE_ONLY_NOTE}


async def wait_while_pending(rest, instance, deadline):
    """Read the instance every POLL_SECONDS until it is no longer pending or the deadline passes.

    The waiting is on the event loop (rest.sleep): each read holds a worker
    thread for its own length only, and the API is asked for no wait.
    """
    while instance["status"] == "pending":
        left = deadline - time.monotonic()
        if left <= 0:
            break
        await rest.sleep(min(POLL_SECONDS, left))
        _, instance = await rest("GET", f"/api/v1/instances/{instance['id']}")
    return instance


async def read_instance(rest, instance_id, access_links=False):
    _, instance = await rest("GET", f"/api/v1/instances/{instance_id}")
    view = instance_view(instance)
    if access_links and view["status"] == "running":
        await add_access_links(rest, view)
    return view


async def renew(rest, instance_id):
    _, renewed = await rest("POST", f"/api/v1/instances/{instance_id}/renew")
    return {"id": str(instance_id), **renewed}


async def stop(rest, instance_id):
    await rest("DELETE", f"/api/v1/instances/{instance_id}")
    return {"id": str(instance_id), "stopped": True}


async def grade_flag(rest, challenge_id, flag, record):
    path = "/api/v1/submissions" if record else "/api/v1/submissions/verify"
    _, verdict = await rest("POST", path, body={"challenge_id": challenge_id, "flag": flag})
    return verdict


async def read_challenges(rest):
    _, challenges = await rest("GET", "/api/v1/challenges")
    return {"challenges": challenges}


# -- the MCP server and its HTTP app (the `mcp` extra) -------------------------------

INSTRUCTIONS = (
    "ctfhost runs private instances of CTF challenges for your team. list_challenges shows what you can launch; "
    "start_instance(challenge_id) launches one and waits until it runs, returning its endpoints (URLs, access "
    "links for HTTP, connection commands for TCP) and expires_at. renew_instance before it expires; "
    "submit_flag once you have the flag (verify_flag checks one without recording it); stop_instance when done. "
    "A team has at most one active instance per challenge: start_instance on a running one returns it."
)


def require_sdk():
    """The parts of the MCP SDK this module uses; MissingDependency when the `mcp` extra is not installed."""
    try:
        import anyio  # optional dependency: the `mcp` extra brings it, the SDK, pydantic and uvicorn
        import uvicorn  # optional (the `mcp` extra)
        from mcp.server.mcpserver import Context, MCPServer  # optional (the `mcp` extra)
        from mcp.server.mcpserver.exceptions import ToolError  # optional (the `mcp` extra)
        from mcp.server.transport_security import TransportSecuritySettings  # optional (the `mcp` extra)
        from mcp.types import ToolAnnotations  # optional (the `mcp` extra)
        from pydantic import Field  # optional (the `mcp` extra)
    except ImportError as exc:
        raise MissingDependency(f"the MCP endpoint needs the MCP SDK ({exc}): {INSTALL_HINT}") from None
    return types.SimpleNamespace(
        anyio=anyio, uvicorn=uvicorn, Context=Context, MCPServer=MCPServer, ToolError=ToolError,
        TransportSecuritySettings=TransportSecuritySettings, ToolAnnotations=ToolAnnotations, Field=Field,
    )


def thread_runner(anyio, threads):
    """`await in_thread(fn, *args)`: fn(*args) in a worker thread, at most `threads` at once for this runner."""
    limiter = []  # made on first use, inside the server's event loop

    async def in_thread(fn, *args):
        if not limiter:
            limiter.append(anyio.CapacityLimiter(threads))
        return await anyio.to_thread.run_sync(fn, *args, limiter=limiter[0])

    return in_thread


def build_server(gateway, in_thread):
    """The MCPServer with ctfhost's seven tools, each dispatching its REST requests as the HTTP request's caller."""
    sdk = require_sdk()
    Context, ToolError, ToolAnnotations, Field = sdk.Context, sdk.ToolError, sdk.ToolAnnotations, sdk.Field

    async def run(ctx, operation, *args, **kwargs):
        caller = ctx.request_context.request.scope.get(CALLER_KEY)
        if caller is None:  # only the HTTP app below serves this server, and it always sets the caller
            raise ToolError("401 Unauthorized: no team token on this request")
        try:
            return await operation(Rest(gateway, caller, in_thread, sdk.anyio.sleep), *args, **kwargs)
        except ToolFailure as exc:
            raise ToolError(exc.describe()) from None

    server = sdk.MCPServer("ctfhost", title="ctfhost", version=__version__, instructions=INSTRUCTIONS)

    ChallengeId = Annotated[str, Field(
        description="The challenge's id (a slug such as `web-login`), as list_challenges shows it",
        min_length=1, max_length=63, pattern=SLUG)]
    InstanceId = Annotated[uuid.UUID, Field(description="The instance's id (a UUID), as start_instance returned it")]
    Flag = Annotated[str, Field(description="The flag, exactly as found", min_length=1, max_length=1000)]

    @server.tool(annotations=ToolAnnotations(readOnlyHint=True, idempotentHint=True, openWorldHint=False))
    async def list_challenges(ctx: Context) -> dict:
        """List the challenges your team can launch (active ones): id, name, protocol (http or tcp), the endpoints
        each instance exposes, ttl_seconds and max_renewals. Needs the token scope `instances:read`."""
        return await run(ctx, read_challenges)

    @server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=True,
                                             openWorldHint=False))
    async def start_instance(
        ctx: Context,
        challenge_id: ChallengeId,
        timeout_seconds: Annotated[int, Field(
            ge=1, le=MAX_START_TIMEOUT_SECONDS,
            description="How long to wait for the instance to run before giving up (it keeps starting)")] = 120,
    ) -> dict:
        """Launch your team's private instance of a challenge and wait until it is running.

        Returns its id, status, expires_at and endpoints: each with its url; HTTP endpoints with a single-use
        access_link (open it once to get the access cookie), TCP endpoints with ready-to-run `connect` commands
        (openssl, ncat, pwntools). If your team already runs an instance of this challenge, returns that one
        (reused: true). Fails with the instance's error if it cannot start, and with its id if it is still
        starting after timeout_seconds. Needs the token scope `instances:write`; waiting and access links need
        `instances:read` too (without it: the launched instance as it stands, with a note)."""
        return await run(ctx, start_and_wait, challenge_id, timeout_seconds)

    @server.tool(annotations=ToolAnnotations(readOnlyHint=True, idempotentHint=True, openWorldHint=False))
    async def instance_status(
        ctx: Context,
        instance_id: InstanceId,
        access_links: Annotated[bool, Field(
            description="Also mint fresh single-use access links for its HTTP endpoints (when running)")] = False,
    ) -> dict:
        """Read one of your team's instances: status (pending, running, destroyed, expired, error), launch phase,
        endpoints, expires_at, renewals_left, and the error of a failed one. Needs the token scope
        `instances:read`."""
        return await run(ctx, read_instance, instance_id, access_links)

    @server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=False,
                                             openWorldHint=False))
    async def renew_instance(ctx: Context, instance_id: InstanceId) -> dict:
        """Extend an active instance: expires_at becomes now + the challenge's TTL (a challenge may limit
        renewals; see renewals_left). Returns the new expires_at and seconds_added. Needs the token scope
        `instances:write`."""
        return await run(ctx, renew, instance_id)

    @server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=False,
                                             openWorldHint=False))
    async def stop_instance(ctx: Context, instance_id: InstanceId) -> dict:
        """Stop and remove one of your team's instances (its state is lost; start_instance makes a fresh one).
        Needs the token scope `instances:write`."""
        return await run(ctx, stop, instance_id)

    @server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=False,
                                             openWorldHint=False))
    async def submit_flag(ctx: Context, challenge_id: ChallengeId, flag: Flag) -> dict:
        """Submit a flag for a challenge; it is graded against your team's own instance and recorded.
        Returns {correct, message, instance_id}: a wrong flag is an answer (correct: false), not an error.
        Needs the token scope `submissions`."""
        return await run(ctx, grade_flag, challenge_id, flag, record=True)

    @server.tool(annotations=ToolAnnotations(readOnlyHint=True, idempotentHint=True, openWorldHint=False))
    async def verify_flag(ctx: Context, challenge_id: ChallengeId, flag: Flag) -> dict:
        """Check a flag like submit_flag without recording anything. Returns {correct, message, instance_id}.
        Needs the token scope `submissions`."""
        return await run(ctx, grade_flag, challenge_id, flag, record=False)

    return server


def build_asgi_app(app, host="127.0.0.1"):
    """The ASGI app serving MCP at MCP_PATH for `app`'s API; refuses a request without a team token with 401."""
    sdk = require_sdk()
    gateway = Gateway(app)
    server = build_server(gateway, thread_runner(sdk.anyio, THREADS))
    authenticating = thread_runner(sdk.anyio, AUTH_THREADS)  # its own threads: waiting tools never delay it
    # Stateless: every request stands alone, so replicas need no sticky sessions. The SDK's DNS-rebinding
    # check (Host must be localhost) would refuse every request through a proxy; it guards servers that
    # trust any local caller, and this one trusts none without a bearer token a browser cannot attach.
    mcp_app = server.streamable_http_app(
        streamable_http_path=MCP_PATH, stateless_http=True, host=host,
        transport_security=sdk.TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )

    async def reply(send, status, body, extra=()):
        payload = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *extra]})
        await send({"type": "http.response.body", "body": payload})

    async def asgi(scope, receive, send):
        if scope["type"] != "http":  # lifespan: the SDK's session manager starts and stops with the server
            return await mcp_app(scope, receive, send)
        if scope["path"] == "/health":
            return await reply(send, 200, {"status": "ok", "service": "ctfhost-mcp"})
        if scope["path"].rstrip("/") == MCP_PATH:
            headers = {key.decode("latin-1").title(): value.decode("latin-1") for key, value in scope["headers"]}
            client = scope.get("client") or ("127.0.0.1", 0)
            try:
                scope[CALLER_KEY] = await authenticating(gateway.identify, headers, client[0])
            except Refused as refused:
                return await reply(send, refused.status, refused.body(),
                                   [(b"www-authenticate", b'Bearer realm="ctfhost"')] if refused.status == 401 else [])
        return await mcp_app(scope, receive, send)

    return asgi


def serve(app, host="127.0.0.1", port=DEFAULT_PORT, log_level="info"):
    """Run the MCP companion under uvicorn until interrupted."""
    asgi = build_asgi_app(app, host)
    # no proxy-header rewriting here: the API's own CTFHOST_PROXY_COUNT reads X-Forwarded-* on each REST call
    require_sdk().uvicorn.run(asgi, host=host, port=port, log_level=log_level, proxy_headers=False, lifespan="on")
