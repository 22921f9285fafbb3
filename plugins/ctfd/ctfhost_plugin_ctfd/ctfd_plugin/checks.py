"""Can players launch this challenge? What the challenge's admin page tells the admin."""

from dataclasses import dataclass

from .client import CtfhostError


@dataclass(frozen=True)
class Check:
    """``level`` is a Bootstrap alert kind ("success", "warning", "danger"); ``text`` says what and what to do."""

    level: str
    text: str


def launch_check(client, slug, runtime):
    """Whether ctfhost knows challenge `slug` and some live worker serves `runtime`, said for the admin."""
    if not slug:
        return Check("warning", "This challenge is not in ctfhost yet: save it to create it there.")
    try:
        challenge = client.get_challenge(slug)
        workers = client.list_workers()
    except CtfhostError as exc:
        if exc.status == 404:
            return Check("danger", f"ctfhost has no challenge {slug!r}: players cannot launch it. Save it to create it again.")
        return Check("danger", f"Cannot check this challenge in ctfhost: {exc.describe()}")
    runtime = challenge.get("runtime") or runtime
    serving = [w for w in workers if runtime in (w.get("runtimes") or [w.get("runtime")])]
    live = [w for w in serving if w.get("status") == "active"]
    if not live:
        stale = f" ({len(serving)} registered but not heartbeating)" if serving else ""
        return Check(
            "danger",
            f"No active ctfhost worker serves runtime {runtime!r}{stale}: players cannot launch this challenge, "
            f"they are told it cannot be launched right now. Start one: flask ctfhost worker --runtime {runtime}",
        )
    used = sum(w.get("active_instances") or 0 for w in live)
    room = sum(w.get("max_instances") or 0 for w in live)
    if used >= room:
        return Check("warning", f"Every worker for runtime {runtime!r} is full ({used}/{room} instances): launches wait for room.")
    return Check("success", f"Players can launch it: {len(live)} active worker(s) serve runtime {runtime!r} ({used}/{room} instances).")
