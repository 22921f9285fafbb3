"""A small client for ctfhost's REST API, as CTFd calls it server to server with the API key.

Only ``requests`` is needed: this module runs inside CTFd, which cannot
import ctfhost. Every failure becomes a :class:`CtfhostError` carrying the
status, ctfhost's message, its field errors and ``Retry-After``.
"""

import datetime
import urllib.parse

import requests

DEFAULT_TIMEOUT = 10


class CtfhostError(Exception):
    """ctfhost refused a call, or could not be reached (``status`` is None then)."""

    def __init__(self, status, message, errors=None, retry_after=None, reason=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or {}
        self.retry_after = retry_after
        # ctfhost's word for why, where one status has several causes (503: "no_worker" or "capacity")
        self.reason = reason

    @property
    def unreachable(self):
        return self.status is None

    def field_messages(self):
        """["port: Must be ...", ...] from ctfhost's {location: {field: [messages]}} errors."""
        lines = []
        for fields in self.errors.values():
            if not isinstance(fields, dict):
                continue
            for field, messages in sorted(fields.items()):
                if isinstance(messages, dict):  # nested (e.g. list items): flatten the values
                    messages = [m for value in messages.values() for m in (value if isinstance(value, list) else [value])]
                if not isinstance(messages, list):
                    messages = [messages]
                lines.append(f"{field}: {' '.join(str(m) for m in messages)}")
        return lines

    def messages_for(self, field):
        """ctfhost's messages about one field of the request body (e.g. "flag"), wherever it put them."""
        found = []
        for fields in self.errors.values():
            messages = fields.get(field) if isinstance(fields, dict) else None
            if messages:
                found.extend(str(m) for m in (messages if isinstance(messages, list) else [messages]))
        return found

    def describe(self):
        """One line for an operator: the message and every field error."""
        details = self.field_messages()
        return f"{self.message} ({'; '.join(details)})" if details else self.message

    def __repr__(self):
        return f"CtfhostError({self.status!r}, {self.message!r})"


def _retry_after(value):
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return None


class CtfhostClient:
    """ctfhost's REST API (``/api/v1``) with the scoreboard's API key."""

    def __init__(self, base_url, api_key, timeout=DEFAULT_TIMEOUT, session=None):
        self.base_url = (base_url or "").rstrip("/")
        self.api_key = api_key or ""
        self.timeout = timeout
        self.session = session or requests.Session()

    @property
    def configured(self):
        return bool(self.base_url and self.api_key)

    # -- transport ---------------------------------------------------------

    def call(self, method, path, body=None, params=None, expect=(200,)):
        """(status, parsed JSON or None, headers); raises CtfhostError unless the status is in `expect`."""
        if not self.configured:
            missing = "URL" if not self.base_url else "API key"
            raise CtfhostError(
                None, f"the ctfhost {missing} is not configured (CTFd admin: ctfhost settings, or CTFHOST_URL / CTFHOST_API_KEY)"
            )
        url = f"{self.base_url}/api/v1{path}"
        try:
            response = self.session.request(
                method,
                url,
                json=body,
                params=params,
                headers={"x-api-key": self.api_key, "Accept": "application/json"},
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise CtfhostError(None, f"ctfhost is unreachable at {self.base_url}: {exc.__class__.__name__}") from None
        try:
            payload = response.json() if response.content else None
        except ValueError:
            payload = None
        if response.status_code in expect:
            return response.status_code, payload, response.headers
        message = payload.get("message") if isinstance(payload, dict) else None
        errors = payload.get("errors") if isinstance(payload, dict) else None
        reason = payload.get("reason") if isinstance(payload, dict) else None
        raise CtfhostError(
            response.status_code,
            message or f"ctfhost answered {response.status_code} to {method} {path}",
            errors=errors if isinstance(errors, dict) else None,
            retry_after=_retry_after(response.headers.get("Retry-After")),
            reason=reason if isinstance(reason, str) else None,
        )

    def _get(self, path, params=None):
        return self.call("GET", path, params=params)[1]

    @staticmethod
    def _quote(value):
        return urllib.parse.quote(str(value), safe="")

    # -- health ------------------------------------------------------------

    def health(self):
        return self._get("/health")

    # -- challenges --------------------------------------------------------

    def list_challenges(self):
        return self._get("/challenges")

    def get_challenge(self, challenge_id):
        return self._get(f"/challenges/{self._quote(challenge_id)}")

    def create_challenge(self, spec):
        return self.call("POST", "/challenges", spec, expect=(201,))[1]

    def update_challenge(self, challenge_id, changes):
        return self.call("PATCH", f"/challenges/{self._quote(challenge_id)}", changes)[1]

    def put_challenge(self, spec, create_first=False):
        """Make ctfhost's challenge ``spec["id"]`` match `spec`, creating or updating it as needed.

        `create_first` when it most likely does not exist yet (a new CTFd
        challenge); otherwise an update is tried first.
        """
        changes = {key: value for key, value in spec.items() if key != "id"}
        if create_first:
            try:
                return self.create_challenge(spec)
            except CtfhostError as exc:
                if exc.status != 409:
                    raise
            return self.update_challenge(spec["id"], changes)
        try:
            return self.update_challenge(spec["id"], changes)
        except CtfhostError as exc:
            if exc.status != 404:
                raise
        return self.create_challenge(spec)

    def delete_challenge(self, challenge_id, force=True):
        """Delete a challenge (force: its active instances too); True if it existed."""
        status, _, _ = self.call(
            "DELETE", f"/challenges/{self._quote(challenge_id)}", params={"force": "true" if force else "false"},
            expect=(204, 404),
        )
        return status == 204

    # -- instances ---------------------------------------------------------

    def launch(self, team_id, challenge_id):
        return self.call("POST", "/instances", {"team_id": team_id, "challenge_id": challenge_id}, expect=(201,))[1]

    def team_instance(self, team_id, challenge_id):
        """The team's active instance of a challenge, or None."""
        status, payload, _ = self.call(
            "GET", f"/instances/team/{self._quote(team_id)}/{self._quote(challenge_id)}", expect=(200, 404)
        )
        return payload if status == 200 else None

    def get_instance(self, instance_id):
        return self._get(f"/instances/{self._quote(instance_id)}")

    def _page(self, path, **params):
        """(rows, total) of a paginated listing; None-valued filters are left out."""
        _, payload, headers = self.call("GET", path, params={k: v for k, v in params.items() if v is not None})
        rows = payload or []
        try:
            total = int(headers.get("X-Total-Count"))
        except (TypeError, ValueError):
            total = len(rows)
        return rows, total

    def list_instances(self, team_id=None, challenge_id=None, status=None, limit=100, offset=0):
        """(instances, total), newest first."""
        return self._page(
            "/instances", team_id=team_id, challenge_id=challenge_id, status=status, limit=limit, offset=offset
        )

    def renew(self, instance_id):
        return self.call("POST", f"/instances/{self._quote(instance_id)}/renew")[1]

    def restart(self, instance_id):
        return self.call("POST", f"/instances/{self._quote(instance_id)}/restart")[1]

    def destroy(self, instance_id):
        self.call("DELETE", f"/instances/{self._quote(instance_id)}", expect=(204,))

    def access_link(self, instance_id, next_path="/", endpoint=None):
        """{"url", "expires_in"}: a single-use link that lets a browser into one HTTP endpoint of the instance.

        `endpoint` names it (default: main). ``main`` is not sent, so the call
        works against a ctfhost that predates several endpoints.
        """
        body = {"next": next_path}
        if endpoint and endpoint != "main":
            body["endpoint"] = endpoint
        return self.call("POST", f"/instances/{self._quote(instance_id)}/access", body)[1]

    # -- flags -------------------------------------------------------------

    def submit(self, team_id, challenge_id, flag):
        """Grade a flag (recorded; another team's flag leaves a flag-sharing event)."""
        return self.call("POST", "/submissions", {"team_id": team_id, "challenge_id": challenge_id, "flag": flag})[1]

    def verify(self, team_id, challenge_id, flag):
        """Grade a flag without recording anything (admin previews)."""
        return self.call(
            "POST", "/submissions/verify", {"team_id": team_id, "challenge_id": challenge_id, "flag": flag}
        )[1]

    def flag_sharing(self, limit=100, offset=0, challenge_id=None, team_id=None):
        """(events, total), newest first."""
        return self._page("/flag-sharing", challenge_id=challenge_id, team_id=team_id, limit=limit, offset=offset)

    # -- workers -----------------------------------------------------------

    def list_workers(self):
        """Every registered worker: id, runtimes, status ("active"/"inactive"), active_instances, max_instances."""
        return self._get("/workers")

    # -- team tokens ---------------------------------------------------------

    def create_token(self, team_id, name, expires_at=None, scopes=None):
        """A new token for the team: the row and, this once, its secret (``token``).

        `expires_at` is an aware datetime or None; `scopes` a list, or None
        for ctfhost's default.
        """
        body = {"team_id": team_id, "name": name, "expires_at": _iso(expires_at)}
        if scopes is not None:
            body["scopes"] = list(scopes)
        return self.call("POST", "/tokens", body, expect=(201,))[1]

    def list_tokens(self, team_id):
        """The team's tokens that are not revoked (expired ones included), newest first; never their secrets."""
        return self._get("/tokens", params={"team_id": team_id}) or []

    def revoke_token(self, token_id):
        self.call("DELETE", f"/tokens/{self._quote(token_id)}", expect=(204,))


def _iso(moment):
    """An aware datetime as ctfhost writes times ("...Z"), or None."""
    if moment is None:
        return None
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
