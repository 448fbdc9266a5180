"""Recipes: TOML -> validated spec -> component objects.

A recipe is plain data, one table per component family plus ``[data]`` (and ``[train]``,
``[eval]`` for the trainer)::

    [schedule]
    name = "linear"      # a registry name, never a class path
    timesteps = 1000

Validation collects every problem and reports each by its TOML path
(``schedule.beta_end: ...``) in one :class:`~gendiff.errors.RecipeError`. Unknown keys are
errors: every key other than ``name`` must be an argument of the named component.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib

from .component import construct
from .errors import ComponentConfigError, GendiffError, RecipeError
from .plugins import PluginSystem, plugin_system

#: the component tables of a recipe, in build order
COMPONENT_TABLES = ("schedule", "parameterization", "variance", "weighting", "sampler", "backbone")
#: tables whose contents belong to the trainer and evaluation (validated by them)
RUNTIME_TABLES = ("train", "eval")
KNOWN_TABLES = COMPONENT_TABLES + ("data",) + RUNTIME_TABLES
DEFAULT_LEVELS = 256


def load_recipe(source: str | os.PathLike | Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """Read a recipe: a TOML file path or an already parsed mapping. Returns (dict, source name)."""
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source)), None
    path = Path(source)
    if not path.is_file():
        raise RecipeError([f"no recipe file at {path}"], str(path))
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh), str(path)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError([f"not valid TOML: {exc}"], str(path)) from None
    except UnicodeDecodeError:
        raise RecipeError(["not valid TOML: the file is not UTF-8 text"], str(path)) from None


@dataclass
class ComponentSpec:
    """One family's table: the registry name and the constructor arguments."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataSpec:
    """``[data]``: a registered dataset (``name`` plus its arguments) or an explicit
    ``shape = [C, H, W]`` and ``levels = K`` (default 256) for models built without data."""

    name: str | None
    args: dict[str, Any]
    shape: tuple[int, int, int] | None = None
    levels: int | None = None


@dataclass
class Recipe:
    """A structurally valid recipe (component names not yet resolved)."""

    components: dict[str, ComponentSpec]
    data: DataSpec
    runtime: dict[str, dict[str, Any]]
    source: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)


def parse_recipe(raw: Mapping[str, Any], source: str | None = None, needs_backbone: bool = True) -> Recipe:
    """Check a recipe's structure, collecting every problem with its TOML path."""
    problems: list[str] = []
    for key in raw:
        if key not in KNOWN_TABLES:
            problems.append(
                f"{key}: unknown table; a recipe has the tables {', '.join(KNOWN_TABLES)}"
            )
    components: dict[str, ComponentSpec] = {}
    for table in COMPONENT_TABLES:
        if table == "backbone" and not needs_backbone:
            if table in raw:
                problems.append("backbone: an explicit model was given, so the recipe must not name a backbone")
            continue
        value = raw.get(table)
        if value is None:
            problems.append(f"{table}: missing table [{table}] (with at least name = \"...\")")
            continue
        if not isinstance(value, Mapping):
            problems.append(f"{table}: expected a table, got {_type_name(value)}")
            continue
        name = value.get("name")
        if not isinstance(name, str) or not name:
            problems.append(f"{table}.name: expected the registry name of a {table} (a string), got {_show(name)}")
            continue
        components[table] = ComponentSpec(name, {k: v for k, v in value.items() if k != "name"})
    data = _parse_data(raw.get("data"), problems)
    runtime = {}
    for table in RUNTIME_TABLES:
        value = raw.get(table, {})
        if not isinstance(value, Mapping):
            problems.append(f"{table}: expected a table, got {_type_name(value)}")
        else:
            runtime[table] = dict(value)
    if problems:
        raise RecipeError(problems, source)
    return Recipe(components, data, runtime, source, dict(raw))


def _parse_data(value: Any, problems: list[str]) -> DataSpec:
    if value is None:
        problems.append('data: missing table [data] (a dataset name, or shape = [C, H, W] and levels = K)')
        return DataSpec(None, {})
    if not isinstance(value, Mapping):
        problems.append(f"data: expected a table, got {_type_name(value)}")
        return DataSpec(None, {})
    if "name" in value:
        name = value["name"]
        if not isinstance(name, str) or not name:
            problems.append(f"data.name: expected the registry name of a dataset (a string), got {_show(name)}")
        for key in ("shape", "levels"):
            if key in value:
                problems.append(f"data.{key}: given by the dataset '{name}'; remove it or remove data.name")
        return DataSpec(name if isinstance(name, str) else None, {k: v for k, v in value.items() if k != "name"})
    unknown = [k for k in value if k not in ("shape", "levels")]
    for key in unknown:
        problems.append(f"data.{key}: unknown key; without a dataset name [data] takes shape and levels")
    shape = value.get("shape")
    ok_shape = (
        isinstance(shape, (list, tuple))
        and len(shape) == 3
        and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)
    )
    if not ok_shape:
        problems.append(f"data.shape: expected [channels, height, width] of positive integers, got {_show(shape)}")
    levels = value.get("levels", DEFAULT_LEVELS)
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        problems.append(f"data.levels: expected an integer K >= 2, got {_show(levels)}")
    return DataSpec(None, {}, tuple(shape) if ok_shape else None, levels)


def instantiate(recipe: Recipe, system: PluginSystem | None = None, context: Mapping[str, Mapping[str, Any]] | None = None):
    """Look up and construct every component and the dataset; the backbone is only looked up
    (its class is returned under "backbone"): it is built once the others' channel counts are
    known. Collects every problem, each with its TOML path."""
    system = system or plugin_system()
    context = context or {}
    problems: list[str] = []
    objects: dict[str, Any] = {}
    for table, spec in recipe.components.items():
        if table == "backbone":  # constructed later, once the channel counts are known
            cls = _lookup(system, table, spec.name, problems, table)
            if cls is not None:
                objects[table] = cls
            continue
        obj = _construct(system, table, spec.name, spec.args, problems, context.get(table, {}))
        if obj is not None:
            objects[table] = obj
    dataset = None
    if recipe.data.name is not None:
        dataset = _construct(system, "dataset", recipe.data.name, recipe.data.args, problems, {}, path="data")
    if problems:
        raise RecipeError(problems, recipe.source)
    return objects, dataset


def _lookup(system, family, name, problems, path):
    try:
        return system.registry(family).get(name)
    except GendiffError as exc:
        problems.append(f"{path}.name: {exc}")
        return None


def _construct(system, family, name, args, problems, context, path=None):
    path = path or family
    cls = _lookup(system, family, name, problems, path)
    if cls is None:
        return None
    try:
        return construct(cls, family, args, **context)
    except ComponentConfigError as exc:
        problems.append(f"{path}: {exc}")
        return None


def _type_name(value: Any) -> str:
    return {dict: "a table", list: "an array", str: "a string", bool: "a boolean", int: "an integer", float: "a float"}.get(
        type(value), type(value).__name__
    )


def _show(value: Any) -> str:
    return "nothing" if value is None else f"{value!r} ({_type_name(value)})"
