"""Each command's options are its stage config's fields: same names, same defaults, each with help.

The commands declare their options by hand (a readable ``--help``, heavy modules imported only when a
command runs), and a recipe sets the config's fields directly, so the two have drifted before. The
expected options are generated here from the configs: a field added to a config fails these tests
until its command exposes it, and an option added to a command fails until its config has the field.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from enum import Enum
from pathlib import PurePath
from typing import Any

import pytest
import typer

from edgecnn.bench.benchmark import BenchConfig, evaluate
from edgecnn.bench.diff import DiffConfig
from edgecnn.bench.emulated import VerifyConfig
from edgecnn.bench.gate import GateConfig
from edgecnn.bench.tune import TuneConfig
from edgecnn.cli import app
from edgecnn.export.pipeline import ExportConfig
from edgecnn.optimize.prune import PruneConfig
from edgecnn.recipe.steps import STEP_TYPES, Step
from edgecnn.train.config import TrainConfig

#: each command and what it hands its options to: a config dataclass, or the function it calls directly
PAIRS: dict[str, Callable[..., Any]] = {
    "train": TrainConfig,
    "prune": PruneConfig,
    "export": ExportConfig,
    "bench": BenchConfig,
    "eval": evaluate,
    "diff": DiffConfig,
    "verify": VerifyConfig,
    "check": GateConfig,
    "tune": TuneConfig,
}

#: commands that hand their options to no stage config, each with the reason
NO_CONFIG = {
    "models": "lists and describes the model zoo; no pipeline stage behind it",
    "run": "takes a recipe file, whose steps are the train/prune/export/bench/check configs checked here",
}

#: the allow-list: options that are no config field, because they only say where the command prints or
#: writes its result (the library returns it; a recipe step writes it into its own folder)
CLI_ONLY: dict[str, dict[str, str]] = {
    "*": {"as_json": "--json prints the result as JSON instead of tables"},
    "bench": {"report": "folder the command writes bench.json/.md/.csv and plots into, after bench() returns"},
    "diff": {"report": "folder the command writes diff.json/.md into, after diff() returns"},
    "check": {
        "junit": "JUnit XML file written from the gate's result",
        "summary": "Markdown summary file written from the gate's result",
        "report": "JSON file written from the gate's result",
        "update_baseline": "file the baseline's answers are stored in, for a later --baseline",
    },
}

REQUIRED = object()  # the default of a field or parameter that has none


def _field_default(item: dataclasses.Field[Any]) -> Any:
    if item.default is not dataclasses.MISSING:
        return item.default
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return REQUIRED


def declared(target: Callable[..., Any]) -> dict[str, tuple[Any, Any]]:
    """``target``'s fields (a dataclass) or parameters (a function): name → (type, default or REQUIRED)."""
    hints = typing.get_type_hints(target)
    if dataclasses.is_dataclass(target):
        return {item.name: (hints[item.name], _field_default(item)) for item in dataclasses.fields(target)}
    return {
        name: (hints[name], REQUIRED if p.default is inspect.Parameter.empty else p.default)
        for name, p in inspect.signature(target).parameters.items()
    }


@functools.cache
def commands() -> dict[str, Any]:
    """The click commands typer builds from ``app``, by name."""
    return typer.main.get_command(app).commands


def options(command: str) -> dict[str, Any]:
    """The command's click parameters by name, less the allow-listed CLI-only ones."""
    exempt = {**CLI_ONLY["*"], **CLI_ONLY.get(command, {})}
    return {p.name: p for p in commands()[command].params if p.name not in exempt}


def shared(command: str) -> list[tuple[str, Any, Any, Any]]:
    """(name, field type, field default, click parameter) of each field the command has an option for."""
    params = options(command)
    return [
        (name, kind, default, params[name])
        for name, (kind, default) in declared(PAIRS[command]).items()
        if name in params
    ]


def _plain(value: Any) -> Any:
    """A default as a recipe's YAML would write it, so that an enum, a Path and a str compare."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def test_every_command_is_paired_with_its_config():
    """A new command must say what it hands its options to, so that it is checked here too."""
    assert set(commands()) == set(PAIRS) | set(NO_CONFIG)


def test_every_recipe_step_is_a_command_and_its_keys_are_config_fields():
    """Whatever a recipe can set must be checked against a command below."""
    for step in STEP_TYPES:
        assert step.kind in PAIRS, f"recipe step {step.kind!r} has no command"
        keys = set(step.model_fields) - set(Step.model_fields) - {"step"}
        assert keys <= set(declared(PAIRS[step.kind])), f"{step.kind}: recipe-only keys"


@pytest.mark.parametrize("command", PAIRS)
def test_options_are_the_config_fields(command):
    fields, params = declared(PAIRS[command]), options(command)
    assert sorted(set(fields) - set(params)) == [], "config fields the command does not expose"
    assert sorted(set(params) - set(fields)) == [], "options no config field stands for (or allow-list them)"


@pytest.mark.parametrize("command", PAIRS)
def test_option_names_are_the_field_names(command):
    """``calib_size`` is ``--calib-size``; a boolean is ``--flag`` or ``--flag/--no-flag``, and one that
    defaults to on must have its ``--no-flag``. Older spellings may follow as aliases."""
    wrong = []
    for name, kind, default, param in shared(command):
        if param.param_type_name == "argument":
            continue  # positional: no spelling beyond its name
        spelled = name.replace("_", "-")
        negation = [f"--no-{spelled}"] if kind is bool and (default or param.secondary_opts) else []
        expected, given = [f"--{spelled}", *negation], [param.opts[0], *param.secondary_opts]
        if given != expected or param.is_flag != (kind is bool):
            wrong.append(f"{name}: {'/'.join(given)}{' (flag)' * param.is_flag}, expected {'/'.join(expected)}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("command", PAIRS)
def test_option_defaults_are_the_field_defaults(command):
    """A required field is a required argument or option; an omitted repeatable option is an empty list."""
    wrong = []
    for name, _, default, param in shared(command):
        if default is REQUIRED or param.required:
            if not (default is REQUIRED and param.required):
                wrong.append(f"{name}: required in {'the config' if default is REQUIRED else 'the command'} only")
            continue
        given = [] if param.multiple and param.default is None else param.default
        if _plain(given) != _plain(default):
            wrong.append(f"{name}: the command's default {given!r}, the config's {default!r}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("command", [*PAIRS, *NO_CONFIG])
def test_every_option_has_help(command):
    checked = [commands()[command], *getattr(commands()[command], "commands", {}).values()]  # and a group's
    missing = [f"{c.name} {p.name}" for c in checked for p in c.params if not (p.help or "").strip()]
    assert not missing, f"options without help: {missing}"


def test_round_to_1_means_off_from_a_recipe_as_from_the_command_line():
    """``--round-to`` cannot say null, so its 1 must be what a recipe's ``round_to: null`` is: off."""
    assert PruneConfig("lenet5", round_to=1).round_to is None
