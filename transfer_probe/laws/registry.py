"""Laws by name, through the plugin manager (the one registry): ``get_law``, ``register_law``, ``LAWS``."""

from __future__ import annotations

from collections.abc import Mapping

# --------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------

class _LawRegistry(Mapping):
    """``LAWS``: a read-only view of the laws the plugin manager knows (built-ins and plugins alike).
    The plugin manager is the one registry; this view only spares callers its import."""

    def __getitem__(self, name: str) -> type:
        try:
            return get_law(name)
        except ValueError as err:
            raise KeyError(str(err)) from None

    def __contains__(self, name: object) -> bool:
        return name in list(self)

    def __iter__(self):
        from transfer_probe import plugins

        return iter(plugins.names("law"))

    def __len__(self) -> int:
        from transfer_probe import plugins

        return len(plugins.names("law"))


LAWS: Mapping[str, type] = _LawRegistry()


def register_law(name: str, cls: type) -> None:
    """Make a law class available under ``name`` in this process (``get_law(name)``,
    ``fit_rows(..., law=name)``, ``transfer-probe fit --law name``): registered as an in-process
    plugin, exactly as a ``register_laws`` hook of an installed plugin would."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"law name must be a non-empty string, got {name!r}")
    if not (isinstance(cls, type) and callable(getattr(cls, "fit", None))):
        raise TypeError(f"law {name!r}: expected a class with a .fit(x, y, sigma=None, **options) method, got {cls!r}")
    from transfer_probe import plugins
    from transfer_probe.hookspecs import hookimpl

    class _OneLaw:
        @hookimpl
        def register_laws(self, register):
            register(name, cls)

    plugins.register_plugin(_OneLaw(), name=f"law:{name}")


def get_law(name: str) -> type:
    """The law class registered under ``name`` with the plugin manager: ``get_law("power")().fit(x, y)``.

    >>> get_law("log").__name__
    'LogLaw'
    """
    from transfer_probe import plugins

    try:
        return plugins.get_law(name)
    except plugins.UnknownNameError as err:
        raise ValueError(str(err)) from None
