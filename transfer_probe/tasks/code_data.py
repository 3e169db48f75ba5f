"""Where :class:`~transfer_probe.tasks.code.CodeTask`'s pairs come from: functions with docstrings
extracted from Python sources (held out by file), and problems in HumanEval's JSON Lines format
(held out by task id). Pure reading and splitting; no model, no code is run."""

from __future__ import annotations

import ast
import gzip
import hashlib
import io
import json
import os
import sysconfig
import tokenize
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

HUMANEVAL_FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
# Standard-library directories with no useful or with generated functions.
_STDLIB_SKIP = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__", "lib2to3",
                "tkinter", "idlelib", "turtledemo", "ensurepip", "pydoc_data", "encodings"}

Pairs = list[tuple[str, str]]


def python_source_pairs(paths: str | os.PathLike | Iterable[str | os.PathLike] | None, *, test_fraction: float,
                        **extract: Any) -> tuple[Pairs, Pairs, bool]:
    """``(train, test, from_stdlib)``: signature + docstring -> body pairs of the Python files under
    ``paths`` (default: the standard library), deterministic and deduplicated, split by file (see
    :meth:`CodeTask.from_python_sources`). ``extract`` goes to :func:`extract_functions`."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    default = paths is None
    roots = [Path(sysconfig.get_paths()["stdlib"])] if default else (
        [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths])
    files = _source_files(roots, skip_stdlib_extras=default)
    seen: set[str] = set()
    train: Pairs = []
    test: Pairs = []
    for rel, path in files:
        try:
            pairs = extract_functions(_read_source(path), **extract)
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError, RecursionError):
            continue  # unreadable or not Python 3: skipped, like any file without functions
        held_out = _file_fraction(rel) < test_fraction
        for prompt, body in pairs:
            key = _normalize_code(body)
            if key in seen:
                continue
            seen.add(key)
            (test if held_out else train).append((prompt, body))
    if not train or not test:
        raise ValueError(
            f"found {len(train)} train and {len(test)} test functions with docstrings in {len(files)} files "
            f"under {[str(r) for r in roots]}; give more sources or change test_fraction={test_fraction}"
        )
    return train, test, default


def _source_files(roots: list[Path], *, skip_stdlib_extras: bool) -> list[tuple[str, Path]]:
    """``(path relative to its root, path)`` of every ``*.py`` under ``roots``, sorted by the
    relative path (which decides the split, whatever other files are present)."""
    files: list[tuple[str, Path]] = []
    for root in roots:
        if not root.exists():
            raise ValueError(f"python source path {str(root)!r} does not exist")
        if root.is_file():
            files.append((root.name, root))
            continue
        for f in sorted(root.rglob("*.py")):
            rel = f.relative_to(root)
            if skip_stdlib_extras and any(part in _STDLIB_SKIP for part in rel.parts[:-1]):
                continue
            if skip_stdlib_extras and rel.name.startswith("test_"):
                continue
            files.append((rel.as_posix(), f))
    files.sort(key=lambda x: x[0])
    return files


def humaneval_split(path: str | os.PathLike, train: str | os.PathLike | Sequence[tuple[str, str]] | None, *,
                    test_fraction: float) -> tuple[Pairs, list[dict[str, Any]]]:
    """``(fine-tuning pairs, tested problems)`` from a HumanEval JSON Lines file (see
    :meth:`CodeTask.from_humaneval_jsonl`)."""
    problems = _read_jsonl(path)
    for i, p in enumerate(problems):
        missing = [k for k in HUMANEVAL_FIELDS if k not in p]
        if missing:
            raise ValueError(f"{path}: line {i + 1} lacks {missing}; HumanEval format has "
                             f"{', '.join(HUMANEVAL_FIELDS)}")
    if train is None:
        tested = [p for p in problems if _file_fraction(str(p["task_id"])) < test_fraction]
        train_pairs = [(p["prompt"], p["canonical_solution"]) for p in problems
                       if _file_fraction(str(p["task_id"])) >= test_fraction]
    elif isinstance(train, (str, os.PathLike)):
        tested, train_pairs = problems, _training_rows(train)
    else:
        tested, train_pairs = problems, [(str(s), str(t)) for s, t in train]
    if not tested:
        raise ValueError(f"{path}: no problems left for testing (test_fraction={test_fraction})")
    return train_pairs, tested


def _training_rows(path: str | os.PathLike) -> Pairs:
    pairs = []
    for i, r in enumerate(_read_jsonl(path)):
        target = r.get("canonical_solution", r.get("completion"))
        if "prompt" not in r or target is None:
            raise ValueError(f"{path}: line {i + 1} needs 'prompt' and 'canonical_solution' (or 'completion')")
        pairs.append((r["prompt"], target))
    return pairs


# ---------------------------------------------------------------------------------------------
# Extraction from Python sources

def extract_functions(source: str, *, max_body_lines: int = 30, max_body_chars: int = 1500,
                      min_body_lines: int = 1, methods: bool = True) -> list[tuple[str, str]]:
    """``(signature + docstring, body)`` pairs of the functions with docstrings in ``source``.

    Both are dedented to the ``def`` line; the prompt ends after the docstring's line, the body is
    the rest of the function. Decorators are left out; nested functions are not extracted on their
    own; methods are when ``methods`` is true.

    >>> extract_functions('def f(x):\\n    \"\"\"Add one.\"\"\"\\n    return x + 1\\n')
    [('def f(x):\\n    \"\"\"Add one.\"\"\"\\n', '    return x + 1\\n')]
    """
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    out: list[tuple[str, str]] = []

    def visit(body: list[ast.stmt], in_class: bool) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (methods or not in_class):
                pair = _function_pair(node, lines, max_body_lines, max_body_chars, min_body_lines)
                if pair is not None:
                    out.append(pair)
            elif isinstance(node, ast.ClassDef) and methods:
                visit(node.body, True)

    visit(tree.body, False)
    return out


def _function_pair(node, lines, max_body_lines, max_body_chars, min_body_lines):
    if not node.body or len(node.body) < 2:
        return None  # no docstring, or nothing after it
    doc = node.body[0]
    if not (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str)):
        return None
    if doc.end_lineno is None or node.end_lineno is None:
        return None
    first_body = node.body[1]
    if first_body.lineno <= doc.end_lineno:  # `"""doc"""; return x` on one line
        return None
    indent = len(lines[node.lineno - 1]) - len(lines[node.lineno - 1].lstrip())
    prompt_lines = lines[node.lineno - 1: doc.end_lineno]
    body_lines = lines[doc.end_lineno: node.end_lineno]
    while body_lines and not body_lines[-1].strip():
        body_lines.pop()
    n_code = sum(1 for ln in body_lines if ln.strip() and not ln.strip().startswith("#"))
    if n_code < min_body_lines or len(body_lines) > max_body_lines:
        return None
    try:
        prompt = _dedent(prompt_lines, indent)
        body = _dedent(body_lines, indent)
    except ValueError:
        return None  # inconsistent indentation (tabs mixed with spaces...)
    if len(body) > max_body_chars or not body.strip():
        return None
    return prompt, body


def _dedent(lines: list[str], indent: int) -> str:
    out = []
    for ln in lines:
        if not ln.strip():
            out.append("\n")
            continue
        if ln[:indent].strip():
            raise ValueError("line less indented than its def")
        out.append(ln[indent:])
    text = "".join(out)
    return text if text.endswith("\n") else text + "\n"


def _read_source(path: Path) -> str:
    with open(path, "rb") as fh:
        data = fh.read()
    # Honour PEP 263 coding cookies, as the interpreter would.
    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    return data.decode(encoding)


def _normalize_code(text: str) -> str:
    return "\n".join(ln.rstrip() for ln in text.strip().splitlines())


def _file_fraction(key: str) -> float:
    """A number in [0, 1) fixed by ``key`` alone (the held-out split by file or task id)."""
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:12], 16) / float(1 << 48)


def _read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.exists():
        raise ValueError(f"file {str(p)!r} does not exist")
    opener = gzip.open if p.suffix == ".gz" else open
    rows = []
    with opener(p, "rt", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{p}: line {i + 1} is not JSON: {e}") from e
    if not rows:
        raise ValueError(f"{p} has no rows")
    return rows
