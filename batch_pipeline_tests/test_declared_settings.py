"""Each setting is declared once (``core.common.settings``): the launchpad's ``Config`` classes,
the core's dataclasses, ``prepare_batch`` and the CLI's flags all have its default, and
``batch-pipeline run --help`` shows every default."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import operator
import re
from pathlib import Path
from typing import Any, get_args

import pytest
from dagster import Config

import batch_pipeline
from batch_pipeline.cli.parser import build_parser
from batch_pipeline.cli.run_config import run_config_from_args
from batch_pipeline.config import BatchConfig
from batch_pipeline.core.common.models import (
    ChunkingSettings,
    CsvOptions,
    DeliverySettings,
    FailureSettings,
    RetrySettings,
)
from batch_pipeline.core.common.settings import (
    Batch,
    Chunking,
    Csv,
    Delivery,
    Failures,
    Retry,
    Section,
)
from batch_pipeline.core.initialize.prepare import prepare_batch, prepare_kwargs

# The run config's sub-sections by their key in BatchConfig, and the core dataclass of each.
SECTIONS: dict[str, type[Section]] = {
    "csv": Csv,
    "chunking": Chunking,
    "delivery": Delivery,
    "retry": Retry,
    "failures": Failures,
}
CORE: dict[type[Section], type] = {
    Csv: CsvOptions,
    Chunking: ChunkingSettings,
    Delivery: DeliverySettings,
    Retry: RetrySettings,
    Failures: FailureSettings,
}


def config_sections() -> list[tuple[str, type[Config], type[Section]]]:
    """BatchConfig and each of its nested Config classes, with the section declaring them."""
    found = [("", BatchConfig, Batch)]
    for name, field in BatchConfig.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, Config):
            found.append((name, field.annotation, SECTIONS[name]))
    return found


@pytest.mark.parametrize(("key", "config", "section"), config_sections())
def test_the_launchpad_fields_are_the_declared_settings(
    key: str, config: type[Config], section: type[Section]
) -> None:
    declared = section.settings()
    nested = SECTIONS if config is BatchConfig else {}  # checked on their own
    fields = {name: f for name, f in config.model_fields.items() if name not in nested}
    assert set(fields) == set(declared)
    for name, field in fields.items():
        setting = declared[name]
        assert field.description == setting.description, name
        assert field.is_required() == setting.required, name
        if not setting.required:
            assert field.get_default(call_default_factory=True) == setting.default, name
        if setting.choices is not None:  # the Literal's values
            assert get_args(field.annotation) == setting.choices, name


@pytest.mark.parametrize("section", list(CORE))
def test_the_core_dataclasses_default_to_the_declared_settings(section: type[Section]) -> None:
    declared = section.settings()
    for field in dataclasses.fields(CORE[section]):
        assert field.name in declared, field.name
        assert field.default == declared[field.name].default, field.name


def test_prepare_batch_and_prepare_kwargs_default_to_the_declared_settings() -> None:
    declared = Batch.settings()
    scalars = str | bool | int | float  # not None or () for "none given"
    parameters = inspect.signature(prepare_batch).parameters.items()
    checked = [name for name, p in parameters if isinstance(p.default, scalars)]
    assert "format" in checked
    for name in checked:
        assert inspect.signature(prepare_batch).parameters[name].default == declared[name].default
    # A run config that gives nothing but the source reads as one that gives every default.
    given = prepare_kwargs({"source": "in.csv"})
    full = prepare_kwargs(BatchConfig(source="in.csv").model_dump())
    given.pop("config"), full.pop("config")
    assert given == full
    for name, value in full.items():
        if isinstance(value, tuple(CORE.values())):
            assert value == type(value)(), name


def _leaves(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, item in value.items():
        if isinstance(item, dict) and name in SECTIONS:
            out.update(_leaves(item, f"{name}."))
        else:
            out[prefix + name] = item
    return out


def test_the_cli_defaults_are_the_launchpad_defaults() -> None:
    args = build_parser().parse_args(["run", "in.csv"])
    given = _leaves(run_config_from_args(args)["ops"]["initialize"]["config"])
    defaults = _leaves(BatchConfig(source="in.csv").model_dump())
    assert given  # every setting the CLI sends is the launchpad's default
    for name, value in given.items():
        assert value == defaults[name], name


def _run_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["run"]


def test_run_help_shows_every_default() -> None:
    run = _run_parser()
    text = " ".join(run.format_help().split())
    options = text[text.index("options:") :]
    flags = [a for a in run._actions if a.option_strings and a.dest != "help"]
    assert len(flags) > 30
    starts: list[int] = []
    for action in flags:  # each option's entry, in order: "--json" is not "--json-records-path"
        flag = re.compile(rf" {re.escape(action.option_strings[0])}(?=[ ,])")
        found = flag.search(options, starts[-1] + 1 if starts else 0)
        assert found, action.dest
        starts.append(found.start())
    for action, start, end in zip(flags, starts, [*starts[1:], len(options)], strict=True):
        shown = options[start:end]
        if "default:" in (action.help or "").lower():  # said in words: "default: CPU count"
            assert "default:" in shown.lower(), action.dest
        else:
            assert f"(default: {action.default})" in shown, (action.dest, shown)


# A parameter that takes a setting under another name.
ALIASES = {
    "fmt": "format",
    "failure_threshold": "breaker_failures",
    "cooldown_seconds": "breaker_cooldown_seconds",
}
NOT_LITERAL = object()


def _literal(node: ast.expr) -> Any:
    """The value of a literal expression (``256 * 1024`` too), else NOT_LITERAL."""
    operators = {ast.Mult: operator.mul, ast.Add: operator.add, ast.Sub: operator.sub}
    if isinstance(node, ast.BinOp) and type(node.op) in operators:
        left, right = _literal(node.left), _literal(node.right)
        if NOT_LITERAL in (left, right):
            return NOT_LITERAL
        return operators[type(node.op)](left, right)
    try:
        return ast.literal_eval(node)
    except ValueError:
        return NOT_LITERAL


def _get_key(node: ast.expr) -> str | None:
    """``"name"`` of ``something.get("name", ...)``."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        return None
    if node.func.attr == "get" and node.args and isinstance(node.args[0], ast.Constant):
        return str(node.args[0].value)
    return None


def _defaults_given(tree: ast.AST) -> list[tuple[int, str, ast.expr]]:
    """Where ``tree`` gives a default to a name: a parameter's default, a class attribute's
    value, ``.get("name", default)`` and ``.get("name") or default``."""
    found: list[tuple[int, str, ast.expr]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            arguments = node.args
            positional = [*arguments.posonlyargs, *arguments.args]
            with_default = positional[len(positional) - len(arguments.defaults) :]
            pairs = [
                *zip(with_default, arguments.defaults, strict=True),
                *zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True),
            ]
            found.extend((d.lineno, a.arg, d) for a, d in pairs if d is not None)
        elif isinstance(node, ast.ClassDef):
            found.extend(
                (item.lineno, item.target.id, item.value)
                for item in node.body
                if isinstance(item, ast.AnnAssign)
                and isinstance(item.target, ast.Name)
                and item.value is not None
            )
        elif isinstance(node, ast.Call) and len(node.args) == 2 and _get_key(node):
            found.append((node.lineno, str(_get_key(node)), node.args[1]))
        elif isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
            key = _get_key(node.values[0])
            if key and len(node.values) == 2:
                found.append((node.lineno, key, node.values[1]))
    return found


def test_no_declared_default_is_written_again_as_a_literal() -> None:
    """A parameter, a field or a ``.get`` named after a setting takes its default from the
    declaration (``Batch.format.default``), not from a literal copy that a change to the
    declaration would leave behind."""
    sections = [Batch, *SECTIONS.values()]
    declared = [(n, s.default) for section in sections for n, s in section.settings().items()]
    defaults = dict(declared)
    assert len(defaults) == len(declared)  # no name is declared twice
    root = Path(batch_pipeline.__file__).parent
    copies = []
    for path in sorted(root.rglob("*.py")):
        if path == root / "core" / "common" / "settings.py":
            continue
        for line, name, node in _defaults_given(ast.parse(path.read_text(), str(path))):
            name = ALIASES.get(name, name)
            value = _literal(node)
            if name not in defaults or value is NOT_LITERAL or defaults[name] is None:
                continue
            wanted = defaults[name]
            if value == wanted and isinstance(value, bool) == isinstance(wanted, bool):
                copies.append(f"{path.relative_to(root)}:{line}: {name} = {ast.unparse(node)}")
    assert copies == []
