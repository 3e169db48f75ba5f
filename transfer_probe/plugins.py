"""The plugin manager: everything transfer_probe accepts by name resolves here.

    from transfer_probe.plugins import get_executor, get_law, list_plugins

    LogLaw = get_law("log")                # -> transfer_probe.laws.LogLaw
    executor = get_executor("process")()   # a class; call it with its keyword arguments
    for p in list_plugins():
        print(p["name"], p["distribution"], p["registered"])

Order of loading (as in tox 4): the built-in ``transfer_probe.default_plugins`` first, then plugins
from the ``transfer_probe`` entry-point group, then plugins registered in-process with
:func:`register_plugin`; then ``check_pending()`` so a misspelled hook (``register_law``) fails at
start-up instead of being silently ignored. Registration is lazy: nothing is loaded until a name is
first looked up, and built-ins are registered as import paths, so looking up a law never imports
torch.

Environment variables (read when plugins are first loaded):

- ``TRANSFER_PROBE_PLUGINS``: comma-separated entry-point or distribution names; only these
  third-party plugins load (empty: none besides the built-ins). Named plugins load even when
  autoload is off, like pytest's ``-p``.
- ``TRANSFER_PROBE_DISABLE_PLUGIN_AUTOLOAD=1``: do not load entry-point plugins at all (unless
  named in ``TRANSFER_PROBE_PLUGINS``).
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import threading
from collections.abc import Iterable
from importlib import metadata
from typing import Any

import pluggy

from transfer_probe import hookspecs
from transfer_probe.plugin_registry import (  # noqa: F401 (all importable from here, as before)
    BUILTIN,
    ENTRY_POINT_GROUP,
    ENV_DISABLE_AUTOLOAD,
    ENV_PLUGINS,
    KINDS,
    PluginError,
    Registration,
    UnknownNameError,
    collect,
)

__all__ = [
    "KINDS",
    "PluginError",
    "Registration",
    "get_plugin_manager",
    "load_plugins",
    "register_plugin",
    "unregister_plugin",
    "get",
    "get_task_type",
    "get_metric",
    "higher_is_better",
    "get_law",
    "get_executor",
    "get_sink",
    "create_sink",
    "names",
    "registrations",
    "list_plugins",
]


# Names users commonly ask for that live in first-party distributions, with how to get them.
_INSTALL_HINTS = {
    ("executor", "ray"): "pip install transfer-probe-ray (or `pip install -e plugins/transfer-probe-ray` "
    "from a source checkout)",
}


class _State:
    def __init__(self) -> None:
        self.pm: pluggy.PluginManager | None = None
        self.registry: dict[str, dict[str, Registration]] | None = None
        self.distinfo: dict[str, str] = {}  # plugin name -> "dist version"
        self.extra: list[tuple[object, str]] = []  # in-process plugins added by register_plugin
        self.lock = threading.RLock()


_state = _State()


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).strip().lower()


def _wanted_plugins() -> set[str] | None:
    """Names from TRANSFER_PROBE_PLUGINS (normalized), or None when it is unset (= all)."""
    raw = os.environ.get(ENV_PLUGINS)
    if raw is None:
        return None
    return {_normalize(n) for n in raw.split(",") if n.strip()}


def _autoload_disabled() -> bool:
    return os.environ.get(ENV_DISABLE_AUTOLOAD, "").strip().lower() not in ("", "0", "false", "no")


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    return pm


def _register(pm: pluggy.PluginManager, plugin: object, name: str, origin: str) -> None:
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as e:
        raise PluginError(f"plugin {name!r} ({origin}) is invalid: {e}") from e
    except ValueError as e:  # same plugin name or object registered twice
        raise PluginError(f"plugin {name!r} ({origin}) cannot be registered: {e}") from e


def _load_entry_points(pm: pluggy.PluginManager, distinfo: dict[str, str]) -> None:
    wanted = _wanted_plugins()
    if wanted is None and _autoload_disabled():
        return
    if wanted is not None and not wanted:
        return
    found: set[str] = set()
    seen_values: set[tuple[str, str]] = set()
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else None
        keys = {_normalize(ep.name)} | ({_normalize(dist_name)} if dist_name else set())
        if wanted is not None and not (keys & wanted):
            continue
        # The same distribution can be on sys.path twice (an editable install and a target dir).
        if (ep.name, ep.value) in seen_values:
            continue
        seen_values.add((ep.name, ep.value))
        found |= keys
        origin = f"{dist_name} {dist.version}" if dist is not None else f"entry point {ep.value}"
        if pm.get_plugin(ep.name) is not None:
            raise PluginError(
                f"two plugins are named {ep.name!r}: {distinfo.get(ep.name, 'an earlier one')} and "
                f"{origin}; uninstall one of them"
            )
        try:
            plugin = ep.load()
        except Exception as e:
            raise PluginError(
                f"plugin {ep.name!r} ({origin}) failed to import {ep.value!r}: {type(e).__name__}: {e}. "
                f"Uninstall it, or leave it out with {ENV_PLUGINS}=<the plugins you want>."
            ) from e
        _register(pm, plugin, ep.name, origin)
        distinfo[ep.name] = origin
    if wanted:
        missing = wanted - found
        if missing:
            installed = sorted(
                {ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
            )
            raise PluginError(
                f"{ENV_PLUGINS} names {sorted(missing)}, but no installed distribution provides such a "
                f"plugin; installed plugins: {installed or 'none'}. Fix the variable or install the plugin."
            )


def load_plugins(*, reload: bool = False) -> pluggy.PluginManager:
    """Load built-in, entry-point and in-process plugins (once) and build the name registry.

    ``reload=True`` starts again from scratch, re-reading the environment variables; in-process
    plugins added with :func:`register_plugin` are kept.
    """
    with _state.lock:
        if _state.pm is not None and _state.registry is not None and not reload:
            return _state.pm
        pm = _new_manager()
        distinfo: dict[str, str] = {}
        _register(pm, importlib.import_module(BUILTIN), BUILTIN, "built-in")
        _load_entry_points(pm, distinfo)
        for plugin, name in _state.extra:
            if pm.get_plugin(name) is not None:
                raise PluginError(f"a plugin named {name!r} is already loaded ({distinfo.get(name, 'built-in')})")
            _register(pm, plugin, name, "registered in-process")
        try:
            pm.check_pending()
        except pluggy.PluginValidationError as e:
            raise PluginError(
                f"{e}. Hooks transfer_probe knows: {', '.join(sorted(KINDS.values()))}"
            ) from e
        registry = collect(pm, distinfo)
        _state.pm, _state.registry, _state.distinfo = pm, registry, distinfo
        return pm


def get_plugin_manager() -> pluggy.PluginManager:
    """The loaded ``pluggy.PluginManager("transfer_probe")``."""
    return load_plugins()


def register_plugin(plugin: object, name: str | None = None) -> str:
    """Add a plugin from the running program (a module, class or object with ``@hookimpl``
    functions) without packaging it, e.g. in a training script or a test. Returns its name.

        class MyPlugin:
            @hookimpl
            def register_sinks(self, register):
                register("print", PrintSink)

        register_plugin(MyPlugin(), name="my-plugin")
    """
    name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
    with _state.lock:
        if any(n == name for _, n in _state.extra):
            raise PluginError(f"a plugin named {name!r} was already registered in-process")
        _state.extra.append((plugin, name))
        try:
            load_plugins(reload=True)
        except Exception:
            _state.extra.pop()
            _state.pm = _state.registry = None
            raise
    return name


def unregister_plugin(name: str) -> None:
    """Remove an in-process plugin added with :func:`register_plugin`."""
    with _state.lock:
        before = len(_state.extra)
        _state.extra = [(p, n) for p, n in _state.extra if n != name]
        if len(_state.extra) == before:
            raise PluginError(f"no in-process plugin named {name!r}")
        load_plugins(reload=True)


def registrations(kind: str) -> dict[str, Registration]:
    """All registrations of one kind (``"task"``, ``"metric"``, ``"law"``, ``"executor"``, ``"sink"``)."""
    _check_kind(kind)
    load_plugins()
    assert _state.registry is not None
    return dict(_state.registry[kind])


def names(kind: str) -> list[str]:
    """The registered names of one kind, sorted."""
    return sorted(registrations(kind))


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise PluginError(f"unknown kind {kind!r}; kinds are {', '.join(KINDS)}")


def get(kind: str, name: str) -> Any:
    """The object registered as ``name`` for ``kind``, imported on first use.

    An unknown name raises :class:`UnknownNameError` listing the valid names and where each comes from.
    """
    regs = registrations(kind)
    reg = regs.get(name) if isinstance(name, str) else None
    if reg is None:
        valid = ", ".join(f"{n} ({r.source})" for n, r in sorted(regs.items())) or "none"
        msg = f"unknown {kind} {name!r}; valid {kind}s: {valid}."
        close = difflib.get_close_matches(str(name), list(regs), n=1)
        if close:
            msg += f" Did you mean {close[0]!r}?"
        hint = _INSTALL_HINTS.get((kind, name))
        if hint:
            msg += f" {kind.capitalize()} {name!r} comes from a separate plugin: {hint}."
        elif _wanted_plugins() is not None or _autoload_disabled():
            msg += (
                f" Note: plugin loading is restricted ({ENV_PLUGINS}={os.environ.get(ENV_PLUGINS)!r}, "
                f"{ENV_DISABLE_AUTOLOAD}={os.environ.get(ENV_DISABLE_AUTOLOAD)!r})."
            )
        raise UnknownNameError(msg)
    return reg.load()


def get_task_type(name: str) -> Any:
    """The task class registered as ``name``: ``get_task_type("translation")`` -> ``TranslationTask``."""
    return get("task", name)


def get_metric(name: str) -> Any:
    """The metric registered as ``name``: ``get_metric("bleu")``."""
    return get("metric", name)


_LOSS_WORDS = {"ce", "loss", "nll", "bpb", "ppl", "perplexity", "ter", "entropy"}


def higher_is_better(metric: str) -> bool:
    """Which way ``metric`` improves: as its registration says (``register("bleu", ...,
    higher_is_better=True)``; ``pass@k`` values ask ``pass_at_k``), else read off the name for a column of
    someone else's table: losses, cross-entropy, bits-per-byte, perplexity and TER improve downward
    (``eval/downstream_bpb/piqa_bpb``, ``val_loss``), anything else upward. Never imports a metric."""
    name = str(metric)
    regs = registrations("metric")
    for key in (name, name.lower(), re.sub(r"@\d+$", "_at_k", name.lower())):
        reg = regs.get(key)
        if reg is not None and "higher_is_better" in reg.meta:
            return bool(reg.meta["higher_is_better"])
    words = set(re.split(r"[^a-z0-9]+", name.lower()))
    return not (words & _LOSS_WORDS or "entropy" in name.lower())


def get_law(name: str) -> Any:
    """The law class registered as ``name``: ``get_law("log")`` -> ``LogLaw``."""
    return get("law", name)


def get_executor(name: str) -> Any:
    """The executor class registered as ``name``: ``get_executor("process")(**options)``."""
    return get("executor", name)


def get_sink(name: str) -> Any:
    """The sink class registered as ``name``: ``get_sink("jsonl")("verdicts.jsonl")``."""
    return get("sink", name)


def create_sink(spec: Any) -> Any:
    """A sink from ``"name:argument"`` (``"jsonl:out/verdicts.jsonl"``, ``"webhook:https://..."``),
    from a bare ``"name"`` (built with no argument), or an object that already is a sink.
    """
    if not isinstance(spec, str):
        if not (hasattr(spec, "on_record") or hasattr(spec, "on_verdict")):
            raise PluginError(
                f"sink {spec!r} has neither on_record nor on_verdict; pass an object following "
                f"transfer_probe.sinks.Sink or a string 'name:argument' (names: {', '.join(names('sink'))})"
            )
        return spec
    name, sep, arg = spec.partition(":")
    factory = get_sink(name)
    return factory(arg) if sep else factory()


def list_plugins() -> list[dict[str, Any]]:
    """One dict per loaded plugin: ``name``, ``distribution`` (``"dist version"`` or None for
    built-in and in-process plugins), ``hooks`` (hook names it implements) and ``registered``
    (kind -> names it registered). Built-ins come first.
    """
    pm = load_plugins()
    assert _state.registry is not None
    out = []
    for name, plugin in pm.list_name_plugin():
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        registered: dict[str, list[str]] = {}
        for kind, regs in _state.registry.items():
            mine = sorted(n for n, r in regs.items() if r.plugin == name)
            if mine:
                registered[kind] = mine
        out.append(
            {"name": name, "distribution": _state.distinfo.get(name), "hooks": hooks, "registered": registered}
        )
    return out


def _reset_for_tests(names_to_forget: Iterable[str] = ()) -> None:
    """Forget the loaded state (and given in-process plugins) so the next lookup reloads."""
    with _state.lock:
        forget = set(names_to_forget)
        _state.extra = [(p, n) for p, n in _state.extra if n not in forget]
        _state.pm = _state.registry = None
        _state.distinfo = {}
