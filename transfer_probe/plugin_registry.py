"""What plugins register, and how one registration is checked: the kinds (one hook each), the
:class:`Registration` of a name (what it points to, which plugin, what it said of it), the errors, and
the table built from the hooks' calls (:func:`collect`), where a name registered twice is an error.
:mod:`transfer_probe.plugins` loads the plugins and answers look-ups from this table."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import Any

import pluggy

ENTRY_POINT_GROUP = "transfer_probe"
ENV_PLUGINS = "TRANSFER_PROBE_PLUGINS"
ENV_DISABLE_AUTOLOAD = "TRANSFER_PROBE_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN = "transfer_probe.default_plugins"


# kind -> hook name. The kind is the singular noun used in messages and in ``get(kind, name)``.
KINDS = {
    "task": "register_tasks",
    "metric": "register_metrics",
    "law": "register_laws",
    "executor": "register_executors",
    "sink": "register_sinks",
}


_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class PluginError(Exception):
    """A plugin could not be loaded, clashed with another, or a name is unknown."""


class UnknownNameError(PluginError, KeyError):
    """No plugin registered this name. Also a ``KeyError`` so ``except KeyError`` works."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


@dataclass
class Registration:
    """One registered name: what kind it is, what it points to, which plugin registered it."""

    kind: str
    name: str
    target: Any  # the object, or an "module:attribute" import path
    plugin: str
    distribution: str | None = None  # "name version" of the distribution, for third-party plugins
    meta: dict = field(default_factory=dict)  # what the plugin said of it: a metric's higher_is_better

    @property
    def source(self) -> str:
        if self.plugin == BUILTIN:
            return "built-in"
        if self.distribution:
            return f"plugin {self.plugin!r} from {self.distribution}"
        return f"plugin {self.plugin!r}"

    def load(self) -> Any:
        """The registered object, importing it first if it was registered by import path."""
        if not isinstance(self.target, str):
            return self.target
        module_name, _, attr = self.target.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as e:
            raise PluginError(
                f"{self.kind} {self.name!r} ({self.source}) points to {self.target!r}, which cannot be "
                f"imported: {type(e).__name__}: {e}"
            ) from e
        return obj


def collect(pm: pluggy.PluginManager, distinfo: dict[str, str]) -> dict[str, dict[str, Registration]]:
    registry: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}
    for kind, hook_name in KINDS.items():
        hook = getattr(pm.hook, hook_name)
        # Call each implementation on its own so every name knows which plugin registered it.
        # get_hookimpls() lists implementations in registration order: built-ins first.
        for impl in hook.get_hookimpls():
            plugin_name = impl.plugin_name

            def register(name: str, target: Any, *, _kind=kind, _plugin=plugin_name, **meta) -> None:
                _add(registry, _kind, name, target, _plugin, distinfo.get(_plugin), meta)

            kwargs = {"register": register} if "register" in impl.argnames else {}
            try:
                impl.function(**kwargs)
            except PluginError:
                raise
            except Exception as e:
                raise PluginError(
                    f"plugin {plugin_name!r} raised in {hook_name}: {type(e).__name__}: {e}"
                ) from e
    return registry


def _add(registry, kind: str, name: str, target: Any, plugin: str, distribution: str | None,
         meta: dict | None = None) -> None:
    if not isinstance(name, str) or not name.strip():
        raise PluginError(f"plugin {plugin!r} registered a {kind} with an invalid name {name!r}: use a non-empty string")
    if isinstance(target, str):
        if not _IMPORT_PATH.match(target):
            raise PluginError(
                f"plugin {plugin!r} registered {kind} {name!r} as {target!r}: a string must be an import "
                f"path 'package.module:attribute'"
            )
    elif target is None:
        raise PluginError(f"plugin {plugin!r} registered {kind} {name!r} as None")
    meta = dict(meta or {})
    if "higher_is_better" in meta and not isinstance(meta["higher_is_better"], bool):
        raise PluginError(f"plugin {plugin!r} registered {kind} {name!r} with higher_is_better="
                          f"{meta['higher_is_better']!r}: use True or False")
    new = Registration(kind, name, target, plugin, distribution, meta)
    old = registry[kind].get(name)
    if old is not None:
        raise PluginError(
            f"{kind} name {name!r} is registered twice: by {old.source} and by {new.source}. "
            f"Uninstall one of them, or restrict loading with {ENV_PLUGINS}=<plugins to load>."
        )
    registry[kind][name] = new
