"""`ctfhost`: the player's command line (launch, list, open, renew, restart, stop, submit, events, whoami).

Human output by default; ``--json`` prints JSON for scripts (``events``:
one JSON object per line). Errors go to stderr. Exit codes: see EXIT_CODES.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

from ctfhost_client import errors
from ctfhost_client.client import Client
from ctfhost_client.models import ACTIVE_STATUSES, Event
from ctfhost_client.version import __version__

OK, SERVER_ERROR, USAGE, AUTH, NOT_FOUND, INSTANCE_FAILED, TIMEOUT, CONNECTION, WRONG_FLAG = range(9)
INTERRUPTED = 130

EXIT_CODES = {
    OK: "done (for submit and verify: the flag is correct)",
    SERVER_ERROR: "the server refused or failed (409, 422, 429, 5xx...)",
    USAGE: "bad command line, or CTFHOST_URL / credentials missing",
    AUTH: "credentials missing, wrong or expired (401), or not allowed / token lacks the scope (403)",
    NOT_FOUND: "no such challenge or instance (404)",
    INSTANCE_FAILED: "the instance ended in error (or ended) before it ran",
    TIMEOUT: "the instance was not running when --timeout passed",
    CONNECTION: "the server could not be reached, or the connection broke (after retries)",
    WRONG_FLAG: "submit / verify: the flag is wrong",
}


def _exit_code(exc):
    if isinstance(exc, (errors.Unauthorized, errors.Forbidden)):
        return AUTH
    if isinstance(exc, errors.NotFound):
        return NOT_FOUND
    if isinstance(exc, errors.InstanceFailed):
        return INSTANCE_FAILED
    if isinstance(exc, errors.InstanceTimeout):
        return TIMEOUT
    if isinstance(exc, errors.ConnectionFailed):
        return CONNECTION
    return SERVER_ERROR


def _epilog():
    lines = ["environment: CTFHOST_URL, CTFHOST_TOKEN (a team token), or CTFHOST_API_KEY with --team", "",
             "exit codes:"]
    lines += [f"  {code}  {meaning}" for code, meaning in EXIT_CODES.items()]
    return "\n".join(lines)


def build_parser():
    # --json is accepted before or after the command (SUPPRESS: the command's default does not undo the global one)
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for scripts")
    parser = argparse.ArgumentParser(
        prog="ctfhost", parents=[output], description="Launch and use your team's ctfhost challenge instances.",
        epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"ctfhost-client {__version__}")
    parser.add_argument("--url", help="ctfhost's URL (default: $CTFHOST_URL)")
    parser.add_argument("--token", help="team token (default: $CTFHOST_TOKEN). Insecure: an option is on the "
                        "command line, which every local user can read (ps, /proc) and your shell history keeps; "
                        "prefer setting CTFHOST_TOKEN")
    parser.add_argument("--api-key", help="the scoreboard's API key instead of a token (default: $CTFHOST_API_KEY); "
                        "like --token, readable by every local user: prefer CTFHOST_API_KEY")
    parser.add_argument("--team", help="the team to act for (needed with the API key; a token knows its team)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name, help_text):
        return commands.add_parser(name, parents=[output], help=help_text, description=help_text)

    start = command("start", "launch an instance of a challenge")
    start.add_argument("challenge")
    start.add_argument("--wait", action="store_true", help="wait until it runs (progress on stderr)")
    start.add_argument("--timeout", type=float, default=300.0, help="seconds to wait with --wait (default 300)")
    command("ls", "list your team's instances (active ones; --all for every one)").add_argument(
        "--all", action="store_true", help="also ended instances")
    show = command("show", "show one instance")
    show.add_argument("id")
    command("challenges", "list the challenges you may launch")
    open_ = command("open", "print a single-use link that opens the instance in a browser")
    open_.add_argument("id")
    open_.add_argument("--endpoint", help="which HTTP endpoint (default: main)")
    for name, text in (("renew", "extend an instance to its full time again"),
                       ("restart", "replace an instance by a fresh one (new id and hostname)"),
                       ("stop", "stop and remove an instance")):
        sub = command(name, text)
        sub.add_argument("id")
        if name == "restart":
            sub.add_argument("--wait", action="store_true", help="wait until the new instance runs")
            sub.add_argument("--timeout", type=float, default=300.0)
    for name, text in (("submit", "submit a flag (recorded)"), ("verify", "check a flag without recording it")):
        sub = command(name, text)
        sub.add_argument("challenge")
        sub.add_argument("flag")
    events = command("events", "follow your team's live events (Ctrl-C to stop)")
    events.add_argument("--challenge", help="only this challenge's")
    events.add_argument("--instance", help="only this instance's")
    events.add_argument("--type", action="append", dest="types", metavar="TYPE",
                        help="only this event type (repeatable), e.g. instance.running")
    events.add_argument("--last-event-id", help="start after this event id (replays what the server kept)")
    events.add_argument("--duration", type=float, help="stop after this many seconds")
    command("whoami", "show the server's version and who you are to it")
    return parser


class Output:
    """Where a command writes: results to stdout, progress and errors to stderr; JSON or words."""

    def __init__(self, as_json, stdout, stderr):
        self.as_json, self.stdout, self.stderr = as_json, stdout, stderr

    def result(self, data, text):
        if self.as_json:
            print(json.dumps(data, sort_keys=True), file=self.stdout, flush=True)
        else:
            print(text, file=self.stdout, flush=True)

    def progress(self, text):
        if not self.as_json:
            print(text, file=self.stderr, flush=True)

    def error(self, exc):
        if self.as_json:
            body = {"error": {"type": type(exc).__name__, "message": getattr(exc, "message", str(exc)),
                              "status": getattr(exc, "status", None), "errors": getattr(exc, "errors", None)}}
            if isinstance(exc, (errors.InstanceFailed, errors.InstanceTimeout)):
                body["error"]["instance"] = exc.instance.to_json()
            print(json.dumps(body, sort_keys=True, default=str), file=self.stderr, flush=True)
        else:
            print(f"ctfhost: error: {exc}", file=self.stderr, flush=True)


def _when(value):
    if not isinstance(value, datetime.datetime):
        return "-" if value is None else str(value)
    left = int((value - datetime.datetime.now(datetime.timezone.utc)).total_seconds())
    stamp = value.strftime("%Y-%m-%d %H:%M:%SZ")
    if left <= 0:
        return stamp
    return f"{stamp} (in {left // 3600}h{left % 3600 // 60:02d}m)" if left >= 3600 else \
        f"{stamp} (in {left // 60}m{left % 60:02d}s)"


def describe(instance):
    """An instance in a few lines for people."""
    lines = [f"{instance.id}  {instance.challenge_id}  {instance.status}"
             + (f" ({instance.phase})" if instance.phase else "")]
    if instance.endpoint:
        lines.append(f"  endpoint: {instance.endpoint}")
    for endpoint in instance.endpoints or ():
        if endpoint.name != "main" or endpoint.url != instance.endpoint:
            lines.append(f"  {endpoint.name}: {endpoint.url} ({endpoint.protocol})")
    for name, text in sorted((instance.connection or {}).items()):
        lines.append(f"  {name}: {text}")
    if instance.expires_at and instance.active:
        lines.append(f"  expires: {_when(instance.expires_at)}")
    error = instance.error or instance.public_error
    if error:
        lines.append(f"  error: {error}")
    return "\n".join(lines)


def _progress_line(item):
    """A line for an Event (following the stream) or an Instance snapshot (polling)."""
    if isinstance(item, Event):
        if item.type == "instance.phase":
            eta = item.data.get("eta_seconds")
            return f"  {item.phase}" + (f" (about {eta:g} s)" if isinstance(eta, (int, float)) else "")
        return f"  {item.type}"
    return f"  {item.status}" + (f" ({item.phase})" if item.phase else "")


def _event_line(event):
    when = event.time.strftime("%H:%M:%S") if isinstance(event.time, datetime.datetime) else "--:--:--"
    detail = " ".join(f"{key}={value}" for key, value in sorted((event.data or {}).items())
                      if key in ("phase", "message", "endpoint", "expires_at", "seconds_left", "replaced_by"))
    who = " ".join(part for part in (event.challenge_id, event.instance_id) if part)
    return f"{when}  {event.type:<20} {who}  {detail}".rstrip()


def run(args, client, out):
    team = args.team
    if args.command == "start":
        instance = client.instances.start(
            args.challenge, team, wait=args.wait, timeout=args.timeout,
            on_progress=(lambda item: out.progress(_progress_line(item))) if args.wait else None)
        out.result(instance.to_json(), describe(instance))
    elif args.command == "ls":
        rows = [i for i in client.instances.list(team_id=team) if args.all or i.status in ACTIVE_STATUSES]
        text = "\n".join(describe(i) for i in rows) if rows else "no instances"
        out.result([i.to_json() for i in rows], text)
    elif args.command == "show":
        instance = client.instances.get(args.id)
        out.result(instance.to_json(), describe(instance))
    elif args.command == "challenges":
        rows = client.challenges.list()
        text = "\n".join(f"{c.id}  {c.name}  ({c.protocol}, TTL {c.ttl_seconds or 'default'} s)" for c in rows)
        out.result([c.to_json() for c in rows], text or "no challenges")
    elif args.command == "open":
        link = client.instances.access_link(args.id, endpoint=args.endpoint)
        out.result(link.to_json(), link.url)
    elif args.command == "renew":
        renewal = client.instances.renew(args.id)
        out.result(renewal.to_json(), f"instance {args.id} renewed: expires {_when(renewal.expires_at)} "
                                      f"(+{renewal.seconds_added} s)")
    elif args.command == "restart":
        instance = client.instances.restart(args.id)
        if args.wait:
            instance = client.instances.wait(instance.id, timeout=args.timeout,
                                             on_progress=lambda item: out.progress(_progress_line(item)))
        out.result(instance.to_json(), describe(instance))
    elif args.command == "stop":
        client.instances.stop(args.id)
        out.result({"id": args.id, "stopped": True}, f"instance {args.id} stopped")
    elif args.command in ("submit", "verify"):
        grade = client.submissions.submit if args.command == "submit" else client.submissions.verify
        verdict = grade(args.challenge, args.flag, team)
        out.result(verdict.to_json(), f"{'correct' if verdict.correct else 'wrong'}: {verdict.message}")
        return OK if verdict.correct else WRONG_FLAG
    elif args.command == "events":
        stream = client.events(team_id=team, challenge_id=args.challenge, instance_id=args.instance, types=args.types,
                               last_event_id=args.last_event_id, max_duration=args.duration)
        with stream:
            for event in stream:
                out.result(event.to_json(), _event_line(event))
    elif args.command == "whoami":
        meta = client.meta()
        caller = meta.caller
        lines = [f"server: {client.url} (ctfhost {meta.server_version}, API {meta.api_version})",
                 f"runtimes: {', '.join(meta.runtimes or []) or '-'}",
                 f"features: {', '.join(meta.features or []) or '-'}"]
        if caller is None:
            lines.append("caller: anonymous")
        else:
            lines.append(f"caller: {caller.kind}" + (f", team {caller.team_id}" if caller.team_id else "")
                         + (f", token {caller.token_id}" if caller.token_id else ""))
            lines.append(f"scopes: {', '.join(caller.scopes or []) or '-'}")
        out.result(meta.to_json(), "\n".join(lines))
    return OK


def main(argv=None, *, stdout=None, stderr=None, environ=None):
    """Run the `ctfhost` command; returns its exit code."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    environ = os.environ if environ is None else environ
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help and --version exit 0, mistakes 2
        return exc.code if isinstance(exc.code, int) else USAGE
    out = Output(getattr(args, "json", False), stdout, stderr)
    url = args.url or environ.get("CTFHOST_URL")
    token = args.token or environ.get("CTFHOST_TOKEN")
    api_key = args.api_key or (None if token else environ.get("CTFHOST_API_KEY"))
    if not url:
        out.error(ValueError("no server: give --url or set CTFHOST_URL"))
        return USAGE
    if not token and not api_key:
        out.error(ValueError("no credentials: give --token or set CTFHOST_TOKEN (or CTFHOST_API_KEY with --team)"))
        return USAGE
    try:
        with Client(url, token, api_key=api_key) as client:
            return run(args, client, out)
    except errors.CtfhostError as exc:
        out.error(exc)
        return _exit_code(exc)
    except KeyboardInterrupt:
        return INTERRUPTED
