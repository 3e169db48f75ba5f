"""The plugin manager, with real third-party plugins built, pip-installed and discovered here.

The plugin of docs/plugins.md is extracted from the document, installed with pip into a temporary
target directory together with a second plugin that clashes with a built-in name, and loaded
through its entry point in a fresh interpreter under each environment-variable setting.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from transfer_probe import hookimpl, plugins
from transfer_probe.sinks import JsonlSink, Sink, WebhookSink

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def _doc_block(label: str) -> str:
    """The fenced code block that follows the line `label`: in docs/plugins.md."""
    text = DOC.read_text()
    m = re.search(re.escape(label) + r"\s*\n\s*```\w*\n(.*?)```", text, re.S)
    assert m, f"docs/plugins.md has no code block after {label!r}"
    return m.group(1)


def _usage_block() -> str:
    text = DOC.read_text()
    m = re.search(r"Install it .*?```python\n(.*?)```", text, re.S)
    assert m, "docs/plugins.md has no usage example after 'Install it'"
    return m.group(1)


CLASH_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "tp-clash"
version = "0.2.0"

[project.entry-points.transfer_probe]
clash = "tp_clash"
"""

CLASH_MODULE = """\
from transfer_probe import hookimpl

@hookimpl
def register_sinks(register):
    register("jsonl", "tp_clash:OtherSink")

class OtherSink:
    def __init__(self, arg=""):
        self.arg = arg
"""


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    """A pip --target directory holding the docs' plugin and a clashing plugin, both real installs."""
    pytest.importorskip("setuptools")
    root = tmp_path_factory.mktemp("plugins")
    src = root / "src"
    reverse = src / "reverse"
    reverse.mkdir(parents=True)
    (reverse / "pyproject.toml").write_text(_doc_block("`pyproject.toml`:"))
    (reverse / "transfer_probe_reverse.py").write_text(_doc_block("`transfer_probe_reverse.py`:"))
    clash = src / "clash"
    clash.mkdir()
    (clash / "pyproject.toml").write_text(CLASH_PYPROJECT)
    (clash / "tp_clash.py").write_text(CLASH_MODULE)
    target = root / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--quiet", "--disable-pip-version-check", "--target", str(target), str(reverse), str(clash)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (target / "transfer_probe_reverse.py").exists()
    return target


def _run(plugin_dir: Path, code: str, **env_vars: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in (plugins.ENV_PLUGINS, plugins.ENV_DISABLE_AUTOLOAD)}
    env["PYTHONPATH"] = os.pathsep.join([str(plugin_dir), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["HF_HUB_OFFLINE"] = "1"
    env.update(env_vars)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


CHECKS = textwrap.dedent("""
    import json, os, sys
    from transfer_probe import plugins

    def attempt(plugins_var, autoload_off):
        for k in (plugins.ENV_PLUGINS, plugins.ENV_DISABLE_AUTOLOAD):
            os.environ.pop(k, None)
        if plugins_var is not None:
            os.environ[plugins.ENV_PLUGINS] = plugins_var
        if autoload_off:
            os.environ[plugins.ENV_DISABLE_AUTOLOAD] = "1"
        try:
            plugins.load_plugins(reload=True)
            return {"plugins": [p["name"] for p in plugins.list_plugins()],
                    "tasks": plugins.names("task"), "sinks": plugins.names("sink")}
        except plugins.PluginError as e:
            return {"error": str(e)}

    out = {
        "all": attempt(None, False),
        "only_reverse": attempt("reverse", False),
        "by_dist_name": attempt("transfer-probe-reverse", False),
        "empty": attempt("", False),
        "autoload_off": attempt(None, True),
        "autoload_off_named": attempt("reverse", True),
        "unknown": attempt("reverse,nosuchplugin", False),
        "only_clash": attempt("clash", False),
    }
    print(json.dumps(out))
""")


def test_third_party_plugin_discovery_env_vars_and_clash(plugin_dir):
    proc = _run(plugin_dir, CHECKS)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    # Both plugins autoload: the clash with the built-in jsonl sink names both plugins.
    err = out["all"]["error"]
    assert "sink name 'jsonl' is registered twice" in err
    assert "built-in" in err and "plugin 'clash' from tp-clash 0.2.0" in err

    for key in ("only_reverse", "by_dist_name", "autoload_off_named"):
        assert out[key]["plugins"] == ["transfer_probe.default_plugins", "reverse"], key
        assert "reverse" in out[key]["tasks"] and "stdout" in out[key]["sinks"], key

    for key in ("empty", "autoload_off"):
        assert out[key]["plugins"] == ["transfer_probe.default_plugins"], key
        assert "reverse" not in out[key]["tasks"], key
        assert {"translation", "code"} <= set(out[key]["tasks"]), key

    assert "nosuchplugin" in out["unknown"]["error"] and "clash" in out["unknown"]["error"]
    assert "registered twice" in out["only_clash"]["error"]


def test_docs_usage_example_runs(plugin_dir):
    proc = _run(plugin_dir, _usage_block(), TRANSFER_PROBE_PLUGINS="reverse")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("demo record ")
    record = json.loads(lines[0][len("demo record "):])
    assert record["task"] == "reverse" and record["metrics"]["exact_match"] == 12.5
    assert lines[-1] == "['transfer_probe.default_plugins', 'reverse']"


def test_unknown_name_lists_valid_names_in_the_plugin_subprocess(plugin_dir):
    code = ("from transfer_probe.plugins import get_task_type\n"
            "try:\n    get_task_type('revers')\nexcept KeyError as e:\n    print(e)\n")
    proc = _run(plugin_dir, code, TRANSFER_PROBE_PLUGINS="reverse")
    assert proc.returncode == 0, proc.stderr
    msg = proc.stdout
    assert "unknown task 'revers'" in msg
    assert "reverse (plugin 'reverse' from transfer-probe-reverse 0.1.0)" in msg
    assert "translation (built-in)" in msg and "Did you mean 'reverse'?" in msg


@pytest.fixture
def in_process_plugins(plugin_dir, monkeypatch):
    """The installed plugin dir on sys.path of this process, only the docs' plugin enabled."""
    monkeypatch.syspath_prepend(str(plugin_dir))
    monkeypatch.setenv(plugins.ENV_PLUGINS, "reverse")
    monkeypatch.delenv(plugins.ENV_DISABLE_AUTOLOAD, raising=False)
    plugins.load_plugins(reload=True)
    yield
    monkeypatch.undo()
    plugins._reset_for_tests()
    for mod in ("transfer_probe_reverse",):
        sys.modules.pop(mod, None)


def test_plugin_task_used_by_name_in_a_real_probe(in_process_plugins, tiny_gpt2, make_snapshot, fast_finetune,
                                                  capsys):
    from transfer_probe.run import probe

    ReverseTask = plugins.get_task_type("reverse")
    assert ReverseTask.__module__ == "transfer_probe_reverse"
    words = ["un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit"]
    sentences = [" ".join(words[(i + j) % 8] for j in range(3)) + f" {i}" for i in range(60)]
    task = ReverseTask(sentences, test_size=10, finetune_sizes=[20])
    config = dataclasses.replace(fast_finetune, max_steps=4, bootstrap=0)  # the plugin path, not learning
    job = probe.ProbeJob(snapshot=make_snapshot(tiny_gpt2, tokens=1000), task=task, finetune_size=20,
                         config=config, run_id="plugin-test")
    record = probe.run_probe(job)
    assert record["status"] == "ok", record.get("error")
    assert record["task"] == "reverse" and record["test_examples"] == 10
    # the plugin's own data and score(): reversed words as references, exact match over 10 sentences
    assert all(smp["reference"] == " ".join(reversed(smp["source"].split())) for smp in record["samples"])
    assert set(record["metrics"]) == {"exact_match", "cross_entropy"}
    assert record["metrics"]["exact_match"] in {10.0 * k for k in range(11)}
    assert record["metrics"]["cross_entropy"] > 0
    # ... and the plugin's sink, by name, takes the record: one JSON line with its prefix.
    capsys.readouterr()
    sink = plugins.create_sink("stdout:probe")
    sink.on_record(record)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("probe record ")
    printed = json.loads(out[0][len("probe record "):])
    assert printed["run_id"] == "plugin-test" and printed["metrics"] == record["metrics"]


# ---------------------------------------------------------------------------------------------
# In-process behaviour: built-ins, errors, laziness.

@pytest.fixture
def clean_plugins(monkeypatch):
    monkeypatch.delenv(plugins.ENV_PLUGINS, raising=False)
    monkeypatch.setenv(plugins.ENV_DISABLE_AUTOLOAD, "1")  # only built-ins + in-process here
    plugins._reset_for_tests()
    yield
    plugins._reset_for_tests(["typo", "clashing", "extra"])


def test_builtins_registered_through_the_hooks(clean_plugins):
    listed = plugins.list_plugins()
    assert listed[0]["name"] == "transfer_probe.default_plugins" and listed[0]["distribution"] is None
    assert set(listed[0]["hooks"]) == set(plugins.KINDS.values())
    assert plugins.names("law") == ["chinchilla", "log", "power", "saturating", "transfer"]
    assert plugins.names("executor") == ["inline", "process"]
    assert plugins.names("sink") == ["jsonl", "webhook"]
    assert plugins.names("task") == ["code", "translation"]
    assert {"bleu", "chrf", "exact_match", "cross_entropy", "pass_at_k"} <= set(plugins.names("metric"))
    assert plugins.get_sink("jsonl") is JsonlSink
    from transfer_probe.metrics import corpus_bleu
    from transfer_probe.tasks import TranslationTask

    assert plugins.get_metric("bleu") is corpus_bleu
    assert plugins.get_task_type("translation") is TranslationTask
    assert plugins.get_metric("bleu")(["a b c d"], ["a b c d"]).score == pytest.approx(100.0)
    from transfer_probe.tasks.code import CodeTask

    assert plugins.get_task_type("code") is CodeTask
    assert plugins.get_metric("pass_at_k")(10, 3, 1) == pytest.approx(0.3)


@pytest.mark.parametrize("kind,module", [("law", "transfer_probe.laws"), ("executor", "transfer_probe.run.executors")])
def test_builtin_targets_resolve_to_their_classes(clean_plugins, kind, module):
    import importlib

    mod = importlib.import_module(module)  # a deleted module is a failure, not a skip
    for name in plugins.names(kind):
        target = plugins.get(kind, name)
        # defined in the package (a submodule of laws/) and importable from it as a public name
        assert isinstance(target, type) and (target.__module__ + ".").startswith(module + "."), (name, target)
        assert getattr(mod, target.__name__) is target
    if kind == "executor":
        assert plugins.get("executor", "inline").name == "inline"
        assert plugins.get("executor", "process").name == "process"
    else:
        assert {plugins.get("law", n).__name__ for n in plugins.names("law")} >= {"LogLaw", "PowerLaw"}


def test_unknown_name_and_ray_install_hint(clean_plugins):
    with pytest.raises(KeyError) as e:
        plugins.get_executor("proces")
    msg = str(e.value)
    assert "unknown executor 'proces'" in msg and "inline (built-in), process (built-in)" in msg
    assert "Did you mean 'process'?" in msg
    if "ray" not in plugins.names("executor"):
        with pytest.raises(KeyError, match="pip install transfer-probe-ray"):
            plugins.get_executor("ray")
    with pytest.raises(plugins.PluginError, match="unknown kind 'model'"):
        plugins.get("model", "x")


def test_misspelled_hook_fails_at_start_up(clean_plugins):
    class Typo:
        @hookimpl
        def register_law(self, register):  # missing "s": must not be silently ignored
            register("x", object)

    with pytest.raises(plugins.PluginError, match="register_law") as e:
        plugins.register_plugin(Typo(), name="typo")
    assert "register_laws" in str(e.value)  # the message lists the real hooks
    assert "log" in plugins.names("law")  # and the manager recovers


def test_in_process_clash_names_both_and_registration_errors(clean_plugins):
    class Clashing:
        @hookimpl
        def register_laws(self, register):
            register("log", "somewhere:Else")

    with pytest.raises(plugins.PluginError) as e:
        plugins.register_plugin(Clashing(), name="clashing")
    assert "law name 'log' is registered twice: by built-in and by plugin 'clashing'" in str(e.value)

    class Bad:
        @hookimpl
        def register_sinks(self, register):
            register("bad", "not an import path")

    with pytest.raises(plugins.PluginError, match="import path 'package.module:attribute'"):
        plugins.register_plugin(Bad(), name="extra")


def test_in_process_plugin_and_lazy_import_error(clean_plugins):
    class Extra:
        @hookimpl
        def register_sinks(self, register):
            register("print", Sink)
            register("missing", "transfer_probe.sinks:NoSuchSink")

    plugins.register_plugin(Extra(), name="extra")
    assert plugins.get_sink("print") is Sink
    assert {"name": "extra", "distribution": None, "hooks": ["register_sinks"],
            "registered": {"sink": ["missing", "print"]}} in plugins.list_plugins()
    with pytest.raises(plugins.PluginError, match="'transfer_probe.sinks:NoSuchSink', which cannot be imported"):
        plugins.get_sink("missing")
    plugins.unregister_plugin("extra")
    assert "print" not in plugins.names("sink")


def test_resolving_a_law_does_not_import_torch():
    code = ("import sys\nfrom transfer_probe import plugins\n"
            "plugins.list_plugins(); plugins.get_sink('jsonl')\n"
            "import importlib.util\n"
            "if importlib.util.find_spec('transfer_probe.laws'): plugins.get_law('log')\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n")
    env = dict(os.environ, TRANSFER_PROBE_DISABLE_PLUGIN_AUTOLOAD="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# Sinks

def test_jsonl_sink_by_name(tmp_path, clean_plugins):
    path = tmp_path / "sub" / "events.jsonl"
    sink = plugins.create_sink(f"jsonl:{path}")
    import numpy as np

    sink.on_record({"task": "en-fr", "tokens": np.int64(1000), "metrics": {"bleu": float("nan")}})
    sink.on_verdict({"status": "aligned", "path": tmp_path})
    sink.close()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["event"] for x in lines] == ["record", "verdict"]
    assert lines[0]["data"] == {"task": "en-fr", "tokens": 1000, "metrics": {"bleu": None}}
    assert lines[1]["data"]["path"] == str(tmp_path)
    with pytest.raises(ValueError, match="closed"):
        sink.on_record({})
    with pytest.raises(plugins.PluginError, match="neither on_record nor on_verdict"):
        plugins.create_sink(object())


def test_webhook_sink_posts_json_and_survives_a_dead_endpoint(clean_plugins):
    received: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"type": self.headers["Content-Type"], "body": json.loads(body)})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        sink = plugins.create_sink(f"webhook:{url}")
        assert isinstance(sink, WebhookSink)
        sink.on_verdict({"task": "en-fr", "status": "misaligned", "recommendation": "stop"})
        sink.on_record({"task": "en-fr", "metrics": {"bleu": 3.5}})
        assert sink.sent == 2 and sink.failures == 0
    finally:
        server.shutdown()
        server.server_close()
    assert received[0]["type"] == "application/json"
    assert received[0]["body"]["event"] == "verdict"
    assert received[0]["body"]["data"]["recommendation"] == "stop"
    assert received[1]["body"]["data"]["metrics"] == {"bleu": 3.5}
    # The server is gone: delivery fails, is counted, and nothing raises.
    dead = WebhookSink(url, timeout=1)
    dead.on_record({"x": 1})
    assert dead.failures == 1 and dead.sent == 0
    with pytest.raises(ValueError, match="http"):
        WebhookSink("ftp://nope")


def test_a_metric_says_which_way_it_improves_and_names_are_read_only_for_unregistered_columns():
    from transfer_probe import hookimpl, plugins

    class TerPlugin:
        @hookimpl
        def register_metrics(self, register):
            register("ter", "transfer_probe.metrics:corpus_bleu", higher_is_better=False)
            register("rouge_loss_free", "transfer_probe.metrics:corpus_bleu", higher_is_better=True)

    plugins.register_plugin(TerPlugin(), name="ter-plugin")
    try:
        assert plugins.higher_is_better("bleu") and plugins.higher_is_better("pass@10")
        assert not plugins.higher_is_better("cross_entropy")
        assert not plugins.higher_is_better("ter")  # as registered
        assert plugins.higher_is_better("rouge_loss_free")  # the registration wins over the name
        # columns of other people's tables: read off the name
        assert not plugins.higher_is_better("eval/downstream_bpb/piqa_bpb")
        assert not plugins.higher_is_better("val_loss") and plugins.higher_is_better("accuracy")
        assert plugins.higher_is_better("sentence_acc")  # "ce" inside a word is not cross-entropy
    finally:
        plugins.unregister_plugin("ter-plugin")


def test_a_metric_direction_must_be_a_bool():
    from transfer_probe import hookimpl, plugins

    class Bad:
        @hookimpl
        def register_metrics(self, register):
            register("odd", "transfer_probe.metrics:corpus_bleu", higher_is_better="yes")

    try:
        # said when the plugin is registered, not when the metric is first looked up
        with pytest.raises(plugins.PluginError, match="higher_is_better='yes': use True or False"):
            plugins.register_plugin(Bad(), name="bad-direction")
    finally:
        try:
            plugins.unregister_plugin("bad-direction")
        except Exception:  # noqa: BLE001 - it may not have been registered at all
            pass
    assert plugins.higher_is_better("bleu")  # the registry still works after the refusal
