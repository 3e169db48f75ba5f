"""The built-in tasks, metrics, laws, executors and sinks, registered through the public hooks.

There is no private path: these are registered exactly as a third-party plugin registers its own
(see docs/plugins.md). Targets are import paths, resolved on first use, so listing or resolving a
law imports neither torch nor transformers.
"""

from __future__ import annotations

from transfer_probe.hookspecs import hookimpl


@hookimpl
def register_tasks(register):
    register("translation", "transfer_probe.tasks:TranslationTask")
    register("code", "transfer_probe.tasks.code:CodeTask")


@hookimpl
def register_metrics(register):
    # which way each improves is said here, where the metric is named (plugins.higher_is_better)
    register("bleu", "transfer_probe.metrics:corpus_bleu", higher_is_better=True)
    register("chrf", "transfer_probe.metrics:corpus_chrf", higher_is_better=True)
    register("exact_match", "transfer_probe.metrics:exact_match", higher_is_better=True)
    register("cross_entropy", "transfer_probe.metrics:target_cross_entropy", higher_is_better=False)
    register("pass_at_k", "transfer_probe.sandbox:pass_at_k", higher_is_better=True)


@hookimpl
def register_laws(register):
    register("log", "transfer_probe.laws.token_laws:LogLaw")
    register("power", "transfer_probe.laws.token_laws:PowerLaw")
    register("saturating", "transfer_probe.laws.token_laws:SaturatingLaw")
    register("transfer", "transfer_probe.laws.transfer:TransferLaw")
    register("chinchilla", "transfer_probe.laws.chinchilla:ChinchillaLaw")


@hookimpl
def register_executors(register):
    register("inline", "transfer_probe.run.executors:InlineExecutor")
    register("process", "transfer_probe.run.executors:ProcessExecutor")


@hookimpl
def register_sinks(register):
    register("jsonl", "transfer_probe.sinks:JsonlSink")
    register("webhook", "transfer_probe.sinks:WebhookSink")
