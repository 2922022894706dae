"""A recipe file: one YAML document that describes a whole pipeline, validated before anything runs.

Errors name the file, the line and the valid choices (``recipes/x.yaml:12: steps[1] (export):
unknown key 'fromats'; did you mean 'formats'? valid: …``), because a typo found after a 3-minute
training step wastes the 3 minutes.
"""

from __future__ import annotations

import difflib
import functools
import operator
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgecnn.errors import EdgeCNNError
from edgecnn.recipe.steps import STEP_TYPES, Step

#: every step type, told apart by its ``step:`` key
AnyStep = Annotated[functools.reduce(operator.or_, STEP_TYPES), Field(discriminator="step")]
STEP_KINDS = {step.kind: step for step in STEP_TYPES}


class RecipeError(EdgeCNNError):
    pass


class Recipe(BaseModel):
    """A pipeline: named, with a folder for its steps' outputs and its report."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    output: Path | None = None  # default: runs/<name>
    steps: list[AnyStep] = Field(min_length=1)

    @property
    def folder(self) -> Path:
        return self.output or Path("runs") / self.name

    def step_folders(self) -> list[str]:
        return [f"{index + 1:02d}-{step.name or step.kind}" for index, step in enumerate(self.steps)]


def load_recipe(path: str | Path) -> Recipe:
    """Parse and validate ``path``; the products each step needs must come from an earlier step."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"cannot read the recipe {path}: {exc.strerror or exc}") from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        raise RecipeError(f"{path}:{line}: not valid YAML: {exc.problem}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}:1: a recipe is a mapping with name and steps (see recipes/README.md)")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        # an unknown key first: it is often the typo that also made a required key "missing"
        errors = sorted(exc.errors(), key=lambda error: error["type"] != "extra_forbidden")
        where, line = _locate(root, data, errors[0]["loc"])
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise RecipeError(f"{path}:{line}: {where}{_describe(errors[0], data)}{more}") from None
    available: set[str] = set()
    for index, step in enumerate(recipe.steps):
        for need in step.needs():
            if not available & set(need.split("|")):
                where, line = _locate(root, data, ("steps", index))
                raise RecipeError(
                    f"{path}:{line}: {where}needs {need.replace('|', ' or ')} from an earlier step; "
                    "add the step before it or give the input in this step"
                )
        available.update(step.makes())
    return recipe


def _locate(root: yaml.Node | None, data: Any, loc: tuple[Any, ...]) -> tuple[str, int]:
    """The readable path (``steps[1] (export): formats: ``) and the line of ``loc`` in the YAML.

    pydantic's ``loc`` also holds the union tag of a step (``'export'``): elements that are not keys
    or indices of the document are skipped.
    """
    node, value, line, where = root, data, 1, ""
    for element in loc:
        if isinstance(value, list) and isinstance(element, int) and element < len(value):
            value = value[element]
            node = node.value[element] if isinstance(node, yaml.SequenceNode) else None
            where += f"[{element}]" + (f" ({value['step']})" if isinstance(value, dict) and "step" in value else "")
        elif isinstance(value, dict) and element in value:
            pairs = node.value if isinstance(node, yaml.MappingNode) else []
            key, node = next(((k, v) for k, v in pairs if k.value == element), (None, None))
            if key is not None:
                line = key.start_mark.line + 1
            value = value[element]
            where += (": " if where.endswith(")") else "." if where else "") + str(element)
            continue
        else:
            continue
        if node is not None:
            line = node.start_mark.line + 1
    return (f"{where}: " if where else ""), line


def _describe(error: dict[str, Any], data: dict[str, Any]) -> str:
    kind, loc = error["type"], error["loc"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        valid = sorted(_fields_at(loc[:-1], data))
        close = difflib.get_close_matches(key, valid, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown key {key!r}{hint} valid: {', '.join(valid)}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return f"unknown or missing step type; valid: {', '.join(STEP_KINDS)}"
    if kind == "missing":
        return f"missing required key {loc[-1]!r}"
    message = str(error["msg"]).removeprefix("Value error, ")
    given = error.get("input")
    if kind == "value_error" or isinstance(given, dict | list):  # the config's own message names the value
        return message
    return f"{message} (got {given!r})"


def _fields_at(loc: tuple[Any, ...], data: dict[str, Any]) -> set[str]:
    """The keys valid where ``loc`` points: the recipe's, or one step type's."""
    if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
        step = data["steps"][loc[1]]
        model: type[BaseModel] = STEP_KINDS.get(step.get("step"), Step) if isinstance(step, dict) else Step
        return set(model.model_fields) | {"step"}
    return set(Recipe.model_fields)
