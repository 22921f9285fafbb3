"""The plugin's settings: CTFd's admin config first, environment variables as fallback."""

import urllib.parse
from dataclasses import dataclass, field

from .team_tokens import PLAYER_SCOPES, SCOPES

PLUGIN_NAME = "ctfhost"
SIGNIN_PATH = f"/plugins/{PLUGIN_NAME}/access"

# setting -> (CTFd config key, environment variable)
SETTINGS = {
    "url": ("ctfhost_url", "CTFHOST_URL"),
    "api_key": ("ctfhost_api_key", "CTFHOST_API_KEY"),
    "public_url": ("ctfhost_ctfd_public_url", "CTFHOST_CTFD_PUBLIC_URL"),
    "renew_min_seconds": ("ctfhost_renew_min_seconds", "CTFHOST_RENEW_MIN_SECONDS"),
    "public_api_url": ("ctfhost_public_api_url", "CTFHOST_PUBLIC_API_URL"),
    "token_max_days": ("ctfhost_token_max_days", "CTFHOST_TOKEN_MAX_DAYS"),
    "token_scopes": ("ctfhost_token_scopes", "CTFHOST_TOKEN_SCOPES"),
}
LABELS = {
    "url": "ctfhost URL",
    "api_key": "ctfhost API key",
    "public_url": "public URL of CTFd",
    "renew_min_seconds": "least time a renewal adds (seconds)",
    "public_api_url": "ctfhost URL for players' programs",
    "token_max_days": "longest life of a player's API token (days)",
    "token_scopes": "scopes players may give their API tokens",
}
# settings that are whole numbers: (default, largest)
NUMBERS = {"renew_min_seconds": (300, 86400), "token_max_days": (30, 365)}
URLS = ("url", "public_api_url", "public_url")


def scope_list(value):
    """The scopes named in "a, b" (ctfhost's own order), or None when it names none or one that is unknown."""
    names = {part.strip() for part in str(value).split(",") if part.strip()}
    if not names or not names <= set(SCOPES):
        return None
    return tuple(scope for scope in SCOPES if scope in names)


def whole_number(value, name):
    """`value` as the number setting `name` takes, or None when it is not one (blank, text, out of range)."""
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if 0 <= number <= NUMBERS[name][1] else None


@dataclass(frozen=True)
class Settings:
    url: str = ""
    api_key: str = ""
    public_url: str = ""
    renew_min_seconds: int = NUMBERS["renew_min_seconds"][0]
    public_api_url: str = ""
    token_max_days: int = NUMBERS["token_max_days"][0]
    token_scopes: tuple = PLAYER_SCOPES
    # setting -> "CTFd config", "environment" or None (unset)
    sources: dict = field(default_factory=dict)

    @property
    def configured(self):
        return bool(self.url and self.api_key)

    @property
    def player_api_url(self):
        """Where players' programs (the ctfhost CLI, curl) reach ctfhost: the public URL, else the one CTFd uses."""
        return (self.public_api_url or self.url).rstrip("/")

    def signin_url(self, fallback_base=""):
        """The value for ctfhost's CTFHOST_AUTH_SIGNIN_URL."""
        base = (self.public_url or fallback_base).rstrip("/")
        return f"{base}{SIGNIN_PATH}?instance={{instance_id}}&next={{next}}"


# settings that are not plain text: name -> parse(value, name), None for a value it does not take
PARSERS = dict({name: whole_number for name in NUMBERS}, token_scopes=lambda value, name: scope_list(value))
DEFAULTS = dict({name: default for name, (default, _) in NUMBERS.items()}, token_scopes=PLAYER_SCOPES)


def resolve(get_config, environ):
    """Settings from `get_config(key)` (CTFd's config table), else `environ`."""
    values, sources = {}, {}
    for name, (config_key, variable) in SETTINGS.items():
        stored = get_config(config_key)
        stored = str(stored).strip() if stored is not None else ""
        candidates = ((stored, "CTFd config"), ((environ.get(variable) or "").strip(), "environment"))
        parse = PARSERS.get(name)
        if parse:
            # a value that is not one this setting takes is skipped, as if unset
            candidates = [(parse(v, name), source) for v, source in candidates if v]
            candidates = [(v, source) for v, source in candidates if v is not None]
        found = [(v, source) for v, source in candidates if v != ""]
        if found:
            values[name], sources[name] = found[0]
        else:
            values[name], sources[name] = DEFAULTS.get(name, ""), None
    return Settings(sources=sources, **values)


def url_problem(value, label):
    """Why `value` is not a usable http(s) base URL, or None."""
    if not value:
        return None
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        return f"{label} must be an http:// or https:// URL, not {value!r}"
    if parsed.query or parsed.fragment:
        return f"{label} must not have a query or fragment"
    return None


def changes_from_form(form):
    """(config key -> new value, problems) from the admin settings form.

    A blank API key keeps the stored one (the page never shows it); the
    checkbox ``clear_api_key`` removes it.
    """
    changes, problems = {}, []
    for name in URLS:
        value = (form.get(name) or "").strip().rstrip("/")
        problem = url_problem(value, LABELS[name])
        if problem:
            problems.append(problem)
        changes[SETTINGS[name][0]] = value
    for name in NUMBERS:
        value = (form.get(name) or "").strip()
        if value and whole_number(value, name) is None:
            problems.append(f"{LABELS[name]} must be a whole number from 0 to {NUMBERS[name][1]}, not {value!r}")
        else:
            changes[SETTINGS[name][0]] = str(whole_number(value, name)) if value else ""
    scopes = (form.get("token_scopes") or "").strip()
    if scopes and scope_list(scopes) is None:
        problems.append(f"{LABELS['token_scopes']}: name one or more of {', '.join(SCOPES)}, separated by commas, not {scopes!r}")
    else:
        changes[SETTINGS["token_scopes"][0]] = ",".join(scope_list(scopes)) if scopes else ""
    api_key = (form.get("api_key") or "").strip()
    if form.get("clear_api_key"):
        changes[SETTINGS["api_key"][0]] = ""
    elif api_key:
        changes[SETTINGS["api_key"][0]] = api_key
    return changes, problems
