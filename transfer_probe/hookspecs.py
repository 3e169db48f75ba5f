"""Hook specifications: what a transfer_probe plugin can provide.

Every hook takes a ``register`` callback and returns nothing, so one plugin registers as many
things as it likes. ``register(name, obj)`` takes a name (what users type: ``executor="ray"``,
``--law log``) and either the object itself (a class or factory) or an import path
``"package.module:attribute"`` that is imported only when the name is first used, so listing plugins
never imports torch. A plugin is a module (or any object) with functions marked ``@hookimpl``::

    from transfer_probe import hookimpl

    @hookimpl
    def register_laws(register):
        register("linear", "my_plugin.laws:LinearLaw")

and is installed as a distribution with an entry point in the ``transfer_probe`` group (see
docs/plugins.md). The built-in tasks, laws, metrics, executors and sinks are registered in
``transfer_probe.default_plugins`` through these same hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

__all__ = ["hookspec", "hookimpl", "Register"]

hookspec = pluggy.HookspecMarker("transfer_probe")
hookimpl = pluggy.HookimplMarker("transfer_probe")

#: ``register(name, obj)``: ``obj`` is the thing itself or an ``"module:attribute"`` import path.
Register = Callable[[str, Any], None]


@hookspec
def register_tasks(register: Register) -> None:
    """Register downstream task types by name (``"translation"``, ``"code"``, ...).

    A task type is a class following the ``transfer_probe.tasks.Task`` protocol; the CLI's
    ``--task-type`` names it.
    """


@hookspec
def register_metrics(register: Register) -> None:
    """Register metrics by name (``"bleu"``, ``"pass_at_k"``, ...).

    A metric is a callable; see ``transfer_probe.metrics`` for the signature each kind follows. Say
    which way it improves: ``register("ter", "my_plugin:ter", higher_is_better=False)`` (the CLI, the
    fits and ``compare_runs`` read it; without it, the direction is guessed from the name).
    """


@hookspec
def register_laws(register: Register) -> None:
    """Register scaling laws by name (``"log"``, ``"power"``, ...).

    A law is a class with ``fit(x, y, ...) -> FitResult`` like those in ``transfer_probe.laws``.
    """


@hookspec
def register_executors(register: Register) -> None:
    """Register probe executors by name (``"inline"``, ``"process"``, ``"ray"``, ...).

    An executor is a class built with keyword arguments that runs ``ProbeJob`` objects; see
    ``transfer_probe.run.executors`` for the interface.
    """


@hookspec
def register_sinks(register: Register) -> None:
    """Register sinks by name (``"jsonl"``, ``"webhook"``, ...): where probe records and verdicts go
    besides the training log and the history file.

    A sink is a class built from one string argument (a path, a URL) that subclasses or follows
    ``transfer_probe.sinks.Sink``: ``on_record(record)``, ``on_verdict(verdict)``, ``close()``.
    """
