"""ctfhost: private, per-team instances of CTF challenges."""

import importlib

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("ctfhost")


def __getattr__(name):
    # `flask --app ctfhost` and `gunicorn 'ctfhost:create_app()'` find the
    # factory here. It is looked up on first use (PEP 562), so the package
    # itself imports none of its modules: importing ctfhost.plugin_api or
    # ctfhost.models does not pull in the whole application.
    if name == "create_app":
        return importlib.import_module("ctfhost.app").create_app
    raise AttributeError(f"module 'ctfhost' has no attribute {name!r}")


__all__ = ["__version__", "create_app", "hookimpl"]
