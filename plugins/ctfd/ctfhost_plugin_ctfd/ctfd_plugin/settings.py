"""The plugin's settings: CTFd's admin config first, environment variables as fallback."""

import urllib.parse
from dataclasses import dataclass, field

PLUGIN_NAME = "ctfhost"
SIGNIN_PATH = f"/plugins/{PLUGIN_NAME}/access"

# setting -> (CTFd config key, environment variable)
SETTINGS = {
    "url": ("ctfhost_url", "CTFHOST_URL"),
    "api_key": ("ctfhost_api_key", "CTFHOST_API_KEY"),
    "public_url": ("ctfhost_ctfd_public_url", "CTFHOST_CTFD_PUBLIC_URL"),
}
LABELS = {"url": "ctfhost URL", "api_key": "ctfhost API key", "public_url": "public URL of CTFd"}


@dataclass(frozen=True)
class Settings:
    url: str = ""
    api_key: str = ""
    public_url: str = ""
    # setting -> "CTFd config", "environment" or None (unset)
    sources: dict = field(default_factory=dict)

    @property
    def configured(self):
        return bool(self.url and self.api_key)

    def signin_url(self, fallback_base=""):
        """The value for ctfhost's CTFHOST_AUTH_SIGNIN_URL."""
        base = (self.public_url or fallback_base).rstrip("/")
        return f"{base}{SIGNIN_PATH}?instance={{instance_id}}&next={{next}}"


def resolve(get_config, environ):
    """Settings from `get_config(key)` (CTFd's config table), else `environ`."""
    values, sources = {}, {}
    for name, (config_key, variable) in SETTINGS.items():
        stored = get_config(config_key)
        stored = stored.strip() if isinstance(stored, str) else ""
        if stored:
            values[name], sources[name] = stored, "CTFd config"
        elif (environ.get(variable) or "").strip():
            values[name], sources[name] = environ[variable].strip(), "environment"
        else:
            values[name], sources[name] = "", None
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
    for name in ("url", "public_url"):
        value = (form.get(name) or "").strip().rstrip("/")
        problem = url_problem(value, LABELS[name])
        if problem:
            problems.append(problem)
        changes[SETTINGS[name][0]] = value
    api_key = (form.get("api_key") or "").strip()
    if form.get("clear_api_key"):
        changes[SETTINGS["api_key"][0]] = ""
    elif api_key:
        changes[SETTINGS["api_key"][0]] = api_key
    return changes, problems
