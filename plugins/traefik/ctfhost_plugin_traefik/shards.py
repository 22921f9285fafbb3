"""The fleet split across several Traefik processes, behind a front Traefik that routes by host name.

Traefik rebuilds its whole routing table on every configuration change, so
one Traefik's cost per launch grows with the fleet (docs/operations.md,
"Traefik at scale"). With S shards, shard i holds only the instances whose
host name falls to it and reloads only for them; the front's own
configuration names the S shards and never changes.

An instance's shard comes from the first character of its host name, the
first of 12 random hex digits (`services.instances.new_hostname`), so the
front can route with one regular expression per shard and the shards are
evenly filled. S is 1, 2, 4, 8 or 16 (a divisor of 16).
"""

import re

COUNTS = (1, 2, 4, 8, 16)
HEX = "0123456789abcdef"


def check_count(count):
    """`count` as an int if it is a valid number of shards, else ValueError naming the allowed ones."""
    try:
        count = int(count)
    except (TypeError, ValueError):
        raise ValueError(f"the number of shards must be one of {', '.join(map(str, COUNTS))}") from None
    if count not in COUNTS:
        raise ValueError(f"the number of shards must be one of {', '.join(map(str, COUNTS))}, not {count}")
    return count


def shard_of(hostname, count):
    """Which of `count` shards holds the instance at `hostname` (0 for a name not starting with a hex digit)."""
    first = hostname[:1].lower()
    return HEX.index(first) * count // 16 if first and first in HEX else 0


def first_characters(shard, count):
    """The hex digits a host name of `shard` starts with."""
    return "".join(c for c in HEX if shard_of(c, count) == shard)


def host_pattern(shard, count, base_domain):
    """A Go regular expression matching the instance host names of `shard` (and no other shard's)."""
    # shard 0 also takes names that do not start with a hex digit: its catch-all's page answers them;
    # (?i): host names are case-insensitive, whatever case a client sends
    first = first_characters(shard, count) + ("g-z" if shard == 0 else "")
    return f"(?i)^[{first}][a-z0-9]*\\.[a-z0-9-]+\\.{re.escape(base_domain.lower())}$"


def api_urls(value):
    """The Traefik API URLs of CTFHOST_TRAEFIK_API_URL (comma-separated: one per shard, in shard order)."""
    urls = [url.strip() for url in str(value or "").split(",") if url.strip()]
    if urls:
        check_count(len(urls))
    return urls


def api_url_for(hostname, value):
    """The API of the Traefik that routes `hostname`, from CTFHOST_TRAEFIK_API_URL; None when unset."""
    urls = api_urls(value)
    return urls[shard_of(hostname, len(urls))] if urls else None
