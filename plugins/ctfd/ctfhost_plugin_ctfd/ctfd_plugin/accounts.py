"""Which ctfhost team id a CTFd account has, so users and teams never share one.

CTFd numbers users and teams separately: user 5 and team 5 are different
accounts. ctfhost knows only a team id, so the kind goes into it: a team is
its number (5), a user is ``"user-5"``. Switching CTFd between users and
teams mode therefore never hands one account's instance, flag or sign-in to
another: instances launched before the switch simply belong to no one who
can still log in as that kind, and expire.

In teams mode an admin without a team acts as their own user account, so
the admin preview can launch an instance and check its flag.
"""

USER_PREFIX = "user-"


def ctfhost_team_id(teams_mode, user_id, team_id, admin=False):
    """The ctfhost team id of a logged-in CTFd user, or None (teams mode, no team, not an admin)."""
    if teams_mode:
        if team_id is not None:
            return int(team_id)
        return f"{USER_PREFIX}{int(user_id)}" if admin else None
    return f"{USER_PREFIX}{int(user_id)}"


def ctfd_account(team_id):
    """("user", 5) for "user-5", ("team", 5) for 5 or "5"; None for anything else."""
    text = str(team_id)
    kind = "team"
    if text.startswith(USER_PREFIX):
        kind, text = "user", text[len(USER_PREFIX):]
    if not text.isdigit():
        return None
    return kind, int(text)
