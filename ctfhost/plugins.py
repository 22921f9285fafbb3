"""The plugin manager: finds plugins by entry point and is the one place hooks are called."""

import logging

import pluggy
from flask import current_app

from ctfhost import hookspecs
from ctfhost.hooktypes import AccessDecision, Backend, LaunchError, RuntimeState

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "ctfhost"


class UnknownRuntime(LookupError):
    """A challenge or worker names a runtime no installed plugin provides."""

    def __init__(self, name, installed):
        self.name = name
        self.installed = sorted(installed)
        listing = ", ".join(self.installed) if self.installed else "none"
        super().__init__(
            f"unknown runtime {name!r}: installed runtimes are {listing}; "
            f"is the plugin providing {name!r} installed?"
        )


class Plugins:
    """Typed facade over pluggy: views, jobs and services call hooks only through this."""

    def __init__(self, disabled=(), load_entry_points=True):
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.disabled = sorted({name.strip() for name in disabled if name.strip()})
        for name in self.disabled:
            self.pm.set_blocked(name)
        from ctfhost import defaults

        self.pm.register(defaults, name="ctfhost.defaults")
        if load_entry_points:
            self.pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        # a misspelled hook name would otherwise never run, silently
        self.pm.check_pending()

    @property
    def hook(self):
        return self.pm.hook

    def register(self, plugin, name=None):
        return self.pm.register(plugin, name=name)

    def unregister(self, plugin=None, name=None):
        return self.pm.unregister(plugin=plugin, name=name)

    # -- listing ---------------------------------------------------------

    def describe(self):
        """One dict per loaded plugin: name, version, hooks it implements."""
        dists = {id(plugin): dist for plugin, dist in self.pm.list_plugin_distinfo()}
        rows = []
        for name, plugin in sorted(self.pm.list_name_plugin(), key=lambda item: item[0]):
            if plugin is None:  # blocked
                continue
            dist = dists.get(id(plugin))
            if dist is not None:
                version = dist.version
            elif name == "ctfhost.defaults":
                from ctfhost import __version__ as version
            else:
                version = getattr(plugin, "__version__", None)
            hooks = sorted(impl.name for impl in self.pm.get_hookcallers(plugin) or [])
            rows.append(
                {
                    "name": name,
                    "version": version,
                    "distribution": dist.project_name if dist is not None else None,
                    "hooks": hooks,
                }
            )
        return rows

    # -- runtimes --------------------------------------------------------

    def runtimes(self):
        names = set()
        for result in self.hook.register_runtimes():
            names.update(result or [])
        return sorted(names)

    def require_runtime(self, name):
        installed = self.runtimes()
        if name not in installed:
            raise UnknownRuntime(name, installed)
        return name

    def check_runtime(self, runtime, worker):
        """None when this host can serve `runtime`, else why not."""
        self.require_runtime(runtime)
        result = self.hook.check_runtime(runtime=runtime, worker=worker)
        if result is not None and not isinstance(result, str):
            raise TypeError(f"check_runtime returned {result!r}, expected a reason or None")
        return result

    def validate_challenge(self, challenge):
        errors = {}
        for result in self.hook.validate_challenge(challenge=challenge):
            for field, messages in (result or {}).items():
                if isinstance(messages, str):
                    messages = [messages]
                errors.setdefault(field, []).extend(messages)
        return errors

    def launch(self, challenge, instance, worker):
        self.require_runtime(challenge.runtime)
        result = self.hook.launch(challenge=challenge, instance=instance, worker=worker)
        if result is None:
            raise LaunchError(f"no plugin launched runtime {challenge.runtime!r}")
        if not isinstance(result, Backend):
            raise TypeError(f"launch returned {result!r}, expected a Backend")
        return result

    def inspect(self, instance, worker):
        result = self.hook.inspect(instance=instance, worker=worker)
        if result is not None and not isinstance(result, RuntimeState):
            raise TypeError(f"inspect returned {result!r}, expected a RuntimeState")
        return result

    def destroy(self, instance, worker):
        result = self.hook.destroy(instance=instance, worker=worker)
        if result is None:
            log.warning(
                "no plugin destroyed instance %s of runtime %r; is the plugin installed?",
                instance.id,
                instance.runtime,
            )
        return bool(result)

    def reconcile(self, worker, runtime, instances):
        result = self.hook.reconcile(worker=worker, runtime=runtime, instances=list(instances))
        return set(result or ())

    # -- proxy -----------------------------------------------------------

    def route(self, instance, action):
        if action not in ("publish", "withdraw"):
            raise ValueError(f"route action must be 'publish' or 'withdraw', not {action!r}")
        self.hook.route(instance=instance, action=action)

    def wait_routed(self, instance, timeout):
        self.hook.wait_routed(instance=instance, timeout=timeout)

    def authorize(self, request, instance):
        result = self.hook.authorize(request=request, instance=instance)
        if not isinstance(result, AccessDecision):
            raise TypeError(f"authorize returned {result!r}, expected an AccessDecision")
        return result

    # -- scoring ---------------------------------------------------------

    def collect_weights(self, challenge):
        totals = {}
        for result in self.hook.collect_weights(challenge=challenge):
            for team, weight in (result or {}).items():
                totals[str(team)] = totals.get(str(team), 0) + weight
        return totals

    # -- extension points ------------------------------------------------

    def register_blueprints(self, app, api):
        self.hook.register_blueprints(app=app, api=api)

    def register_commands(self, cli):
        self.hook.register_commands(cli=cli)


def get_plugins(app=None):
    """The Plugins of `app` (default: the current app)."""
    app = app or current_app
    return app.extensions["ctfhost.plugins"]

