"""The plugin manager: finds plugins by entry point and is the one place hooks are called."""

import importlib.metadata
import logging

import pluggy
from flask import current_app

from ctfhost import __version__, hookspecs
from ctfhost.hooktypes import AccessDecision, Backend, CoreOptions, LaunchError, RuntimeOptions, RuntimeState

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


class DuplicateRuntime(RuntimeError):
    """Two plugins name the same runtime: the core could not tell which one to call."""


class UnknownPlugin(ValueError):
    """CTFHOST_DISABLED_PLUGINS names a plugin that is not installed (a typo would leave it enabled)."""


# hooks whose implementations are called only on the plugin providing the
# runtime, and how each call names that runtime
RUNTIME_HOOKS = {
    "check_runtime": lambda kwargs: kwargs["runtime"],
    "runtime_options": lambda kwargs: kwargs["runtime"],
    "launch": lambda kwargs: kwargs["challenge"].runtime,
    "inspect": lambda kwargs: kwargs["instance"].runtime,
    "destroy": lambda kwargs: kwargs["instance"].runtime,
    "reconcile": lambda kwargs: kwargs["runtime"],
    "prepare_image": lambda kwargs: kwargs["runtime"],
    "image_state": lambda kwargs: kwargs["runtime"],
}
IMAGE_STATES = ("pulled", "unpulled")


class Plugins:
    """Typed facade over pluggy: views, jobs and services call hooks only through this."""

    def __init__(self, disabled=(), load_entry_points=True, builtins=None):
        """`builtins` ({name: plugin}): the core's own plugins, which the app factory passes in;
        they are registered like any plugin (and disabled the same way)."""
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.disabled = sorted({name.strip() for name in disabled if name.strip()})
        self._runtime_plugins = {}  # runtime name -> the plugin object providing it
        self._callers = {}  # (hook name, plugin id) -> hook caller limited to that plugin
        self._options = {}  # runtime name -> its options schema class
        self.builtins = dict(builtins or {})
        if load_entry_points:
            self._check_disabled()
        for name in self.disabled:
            self.pm.set_blocked(name)
        for name, plugin in self.builtins.items():
            self.register(plugin, name=name)
        if load_entry_points:
            self.pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
            for plugin in self.pm.get_plugins():
                self._learn_runtimes(plugin)
        # a misspelled hook name would otherwise never run, silently
        self.pm.check_pending()

    def _check_disabled(self):
        installed = {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)} | set(self.builtins)
        unknown = [name for name in self.disabled if name not in installed]
        if unknown:
            raise UnknownPlugin(
                f"CTFHOST_DISABLED_PLUGINS names {', '.join(repr(name) for name in unknown)}, which "
                f"{'is' if len(unknown) == 1 else 'are'} not installed; installed plugins are "
                f"{', '.join(sorted(installed))}"
            )

    @property
    def hook(self):
        return self.pm.hook

    def register(self, plugin, name=None):
        registered = self.pm.register(plugin, name=name)
        if registered is not None:
            try:
                self._learn_runtimes(plugin)
            except DuplicateRuntime:
                self.pm.unregister(plugin)
                raise
        return registered

    def unregister(self, plugin=None, name=None):
        removed = self.pm.unregister(plugin=plugin, name=name)
        if removed is not None:
            self._runtime_plugins = {
                runtime: owner for runtime, owner in self._runtime_plugins.items() if owner is not removed
            }
            self._forget_callers()
        return removed

    def _forget_callers(self):
        # a subset caller excludes the plugins known when it was made: rebuild after any change
        self._callers.clear()
        self._options.clear()

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
            elif name in self.builtins:
                version = __version__
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

    def _learn_runtimes(self, plugin):
        """Remember which runtimes `plugin` provides: asked once, when it is registered."""
        names = []
        for impl in self.pm.hook.register_runtimes.get_hookimpls():
            if impl.plugin is plugin:
                names.extend(impl.function() or [])
        for runtime in names:
            owner = self._runtime_plugins.get(runtime)
            if owner is not None and owner is not plugin:
                raise DuplicateRuntime(
                    f"runtime {runtime!r} is provided by two plugins, {self.pm.get_name(owner)!r} and "
                    f"{self.pm.get_name(plugin)!r}; uninstall one or list it in CTFHOST_DISABLED_PLUGINS"
                )
        for runtime in names:
            self._runtime_plugins[runtime] = plugin
        self._forget_callers()

    def runtimes(self):
        return sorted(self._runtime_plugins)

    def require_runtime(self, name):
        if name not in self._runtime_plugins:
            raise UnknownRuntime(name, self._runtime_plugins)
        return name

    def runtime_hook(self, hook_name, runtime):
        """The caller of `hook_name` that reaches only the plugin providing `runtime`."""
        plugin = self._runtime_plugins.get(runtime)
        if plugin is None:
            raise UnknownRuntime(runtime, self._runtime_plugins)
        key = (hook_name, id(plugin))
        caller = self._callers.get(key)
        if caller is None:
            others = [other for other in self.pm.get_plugins() if other is not plugin]
            caller = self._callers[key] = self.pm.subset_hook_caller(hook_name, remove_plugins=others)
        return caller

    def _call_runtime(self, hook_name, **kwargs):
        return self.runtime_hook(hook_name, RUNTIME_HOOKS[hook_name](kwargs))(**kwargs)

    def check_runtime(self, runtime, worker):
        """None when this host can serve `runtime`, else why not."""
        result = self._call_runtime("check_runtime", runtime=runtime, worker=worker)
        if result is not None and not isinstance(result, str):
            raise TypeError(f"check_runtime returned {result!r}, expected a reason or None")
        return result

    def options_schema(self, runtime):
        """The schema class of `runtime`'s extra_config: the plugin's keys and the core's."""
        schema = self._options.get(runtime)
        if schema is None:
            declared = self._call_runtime("runtime_options", runtime=runtime)
            if declared is None:
                schema = CoreOptions
            elif isinstance(declared, type) and issubclass(declared, RuntimeOptions):
                schema = type(f"{declared.__name__}WithCoreOptions", (declared, CoreOptions), {})
            else:
                raise TypeError(f"runtime_options returned {declared!r}, expected a RuntimeOptions subclass")
            self._options[runtime] = schema
        return schema

    def option_errors(self, runtime, options):
        """Messages for every problem of `options` (a dict) for `runtime`: unknown keys first; empty when fine."""
        schema = self.options_schema(runtime)()
        errors = schema.validate(options)
        accepted = ", ".join(sorted(schema.fields))
        messages = [
            f"unknown key {key!r}; the {runtime} runtime accepts: {accepted}"
            for key in sorted(key for key in errors if key not in schema.fields and key != "_schema")
        ]
        for key in sorted(key for key in errors if key in schema.fields or key == "_schema"):
            for message in _leaves(errors[key]):
                if message not in messages:
                    messages.append(message)
        return messages

    def validate_challenge(self, challenge):
        """Errors from the runtime's plugin and from plugins providing no runtime."""
        owner = self._runtime_plugins.get(challenge.runtime)
        key = ("validate_challenge", id(owner))
        caller = self._callers.get(key)
        if caller is None:
            providers = {id(plugin) for plugin in self._runtime_plugins.values()}
            others = [plugin for plugin in self.pm.get_plugins() if plugin is not owner and id(plugin) in providers]
            caller = self._callers[key] = self.pm.subset_hook_caller("validate_challenge", remove_plugins=others)
        errors = {}
        for result in caller(challenge=challenge):
            for field, messages in (result or {}).items():
                if isinstance(messages, str):
                    messages = [messages]
                errors.setdefault(field, []).extend(messages)
        return errors

    def launch(self, challenge, instance, worker, timeout):
        result = self._call_runtime("launch", challenge=challenge, instance=instance, worker=worker, timeout=timeout)
        if result is None:
            raise LaunchError(f"no plugin launched runtime {challenge.runtime!r}")
        if not isinstance(result, Backend):
            raise TypeError(f"launch returned {result!r}, expected a Backend")
        wrong = {name: value for name, value in result.endpoints.items() if not isinstance(value, Backend)}
        if wrong:
            raise TypeError(f"launch returned endpoints {wrong!r}, expected a Backend for each")
        return result

    def prepare_image(self, runtime, image, worker):
        """True once `image` is on `worker` for `runtime`; None when no plugin pre-pulls it (errors propagate)."""
        if runtime not in self._runtime_plugins:
            return None
        result = self._call_runtime("prepare_image", runtime=runtime, image=image, worker=worker)
        if result is not None and result is not True:
            raise TypeError(f"prepare_image returned {result!r}, expected True or None")
        return result

    def image_state(self, runtime, image, worker):
        """"pulled" or "unpulled" for `image` on `worker`; None when the runtime cannot tell."""
        if runtime not in self._runtime_plugins:
            return None
        result = self._call_runtime("image_state", runtime=runtime, image=image, worker=worker)
        if result is not None and result not in IMAGE_STATES:
            raise TypeError(f"image_state returned {result!r}, expected one of {', '.join(IMAGE_STATES)} or None")
        return result

    def inspect(self, instance, worker):
        if instance.runtime not in self._runtime_plugins:
            return None
        result = self._call_runtime("inspect", instance=instance, worker=worker)
        if result is not None and not isinstance(result, RuntimeState):
            raise TypeError(f"inspect returned {result!r}, expected a RuntimeState")
        return result

    def destroy(self, instance, worker):
        result = None
        if instance.runtime in self._runtime_plugins:
            result = self._call_runtime("destroy", instance=instance, worker=worker)
        if result is None:
            log.warning(
                "no plugin destroyed instance %s of runtime %r; is the plugin installed?",
                instance.id,
                instance.runtime,
            )
        return bool(result)

    def reconcile(self, worker, runtime, instances):
        if runtime not in self._runtime_plugins:
            return set()
        result = self._call_runtime("reconcile", worker=worker, runtime=runtime, instances=list(instances))
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


def _leaves(errors):
    """The message strings of a marshmallow error value (a list, or a dict for items of a list or dict)."""
    if isinstance(errors, str):
        return [errors]
    values = errors.values() if isinstance(errors, dict) else errors
    return [message for value in values for message in _leaves(value)]


def get_plugins(app=None):
    """The Plugins of `app` (default: the current app)."""
    app = app or current_app
    return app.extensions["ctfhost.plugins"]

