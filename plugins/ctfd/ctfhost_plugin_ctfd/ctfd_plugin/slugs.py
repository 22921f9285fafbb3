"""The ctfhost challenge id of a CTFd challenge: a slug made once from its name and CTFd id.

CTFd has no slug field. The slug is derived when the challenge is created
and stored with it, so renaming the challenge later never changes the id
ctfhost knows it by. The CTFd id suffix keeps two challenges with the same
name apart.
"""

import re
import unicodedata

MAX_LENGTH = 63
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*[a-z0-9]$")


def challenge_slug(name, ctfd_id):
    """"Baby SQL" and 12 -> "baby-sql-12"; always a valid ctfhost challenge id."""
    suffix = f"-{int(ctfd_id)}"
    ascii_name = unicodedata.normalize("NFKD", name or "").encode("ascii", "ignore").decode("ascii")
    base = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    base = base[: MAX_LENGTH - len(suffix)].rstrip("-") or "challenge"
    return base + suffix


def is_slug(value):
    return isinstance(value, str) and 2 <= len(value) <= MAX_LENGTH and bool(SLUG.match(value))
