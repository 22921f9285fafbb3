"""ctfhost: private, per-team instances of CTF challenges."""

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("ctfhost")


def create_app(config=None):
    """Build the Flask application (re-exported so `flask --app ctfhost` finds it)."""
    from ctfhost.app import create_app as _create_app

    return _create_app(config)


__all__ = ["__version__", "create_app", "hookimpl"]
