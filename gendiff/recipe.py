"""Recipes: TOML -> validated spec -> component objects.

A recipe is plain data, one table per component family plus ``[data]`` (and ``[train]``,
``[eval]`` for the trainer)::

    [schedule]
    name = "linear"      # a registry name, never a class path
    timesteps = 1000

Validation collects every problem and reports each by its TOML path
(``schedule.beta_end: ...``) in one :class:`~gendiff.errors.RecipeError`. Unknown keys are
errors: every key other than ``name`` must be an argument of the named component (checked
against the type of its default), and ``[train]``/``[eval]`` follow :mod:`gendiff.config`.
``--set a.b=value`` overrides (:func:`apply_overrides`) take TOML values (``0.01``, ``[1, 2]``,
``true``, ``"text"``; a bare word is a string) and must keep the type of the value they replace.

The resolved recipe (:func:`resolve`) fills in every default and records, in a ``[gendiff]``
table, the gendiff version and the plugin (with its version) behind each component; it is
written into the run folder and every checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib

from .component import check_arguments, construct, constructor_defaults, same_kind, type_name
from .config import ConditioningConfig, EvalConfig, TrainConfig, check_conditioning, to_table, validate_table
from .errors import ComponentConfigError, GendiffError, RecipeError
from .plugins import PluginSystem, plugin_system

#: the component tables of a recipe, in build order
COMPONENT_TABLES = ("schedule", "parameterization", "variance", "weighting", "sampler", "time_sampler", "backbone")
#: component tables a recipe may leave out, and the component they then name
DEFAULT_COMPONENTS = {"time_sampler": "uniform"}
#: tables of typed settings (validated by :mod:`gendiff.config`)
RUNTIME_TABLES = ("train", "eval", "conditioning")
CONFIGS = {"train": TrainConfig, "eval": EvalConfig, "conditioning": ConditioningConfig}
#: provenance written by :func:`resolve` (accepted on input, informational)
PROVENANCE_TABLE = "gendiff"
KNOWN_TABLES = COMPONENT_TABLES + ("data",) + RUNTIME_TABLES + (PROVENANCE_TABLE,)
DEFAULT_LEVELS = 256
#: the backbone arguments gendiff supplies itself (see gendiff.backbones)
BACKBONE_CONTEXT = ("in_channels", "out_channels", "image_size")


def backbone_context(cls) -> tuple[str, ...]:
    """The arguments gendiff supplies to a backbone class: :data:`BACKBONE_CONTEXT`, and
    ``num_classes`` for a backbone that provides "class-labels" (0 for an unconditional recipe)."""
    return BACKBONE_CONTEXT + (("num_classes",) if "class-labels" in getattr(cls, "provides", ()) else ())
#: options of ``[data]`` that apply to every dataset (not passed to the dataset's constructor):
#: random horizontal flips in training, and DataLoader worker processes that read the batches ahead
DATA_OPTIONS: dict[str, Any] = {"flip": False, "workers": 0}


def load_recipe(
    source: str | os.PathLike | Mapping[str, Any], overrides: Sequence[str] = ()
) -> tuple[dict[str, Any], str | None]:
    """Read a recipe (a TOML file path or a parsed mapping) and apply ``--set`` overrides.
    Returns (dict, source name)."""
    if isinstance(source, Mapping):
        raw, name = copy.deepcopy(dict(source)), None
    else:
        path = find_recipe(source)
        name = str(path)
        try:
            raw = tomllib.loads(path.read_bytes().decode("utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise RecipeError([f"not valid TOML: {exc}"], name) from None
        except UnicodeDecodeError:
            raise RecipeError(["not valid TOML: the file is not UTF-8 text"], name) from None
    if overrides:
        problems = apply_overrides(raw, overrides)
        if problems:
            raise RecipeError(problems, name)
    return raw, name


def builtin_recipes() -> dict[str, Path]:
    """gendiff's built-in recipes by name (the files of the package ``gendiff.recipes``, the
    repository's ``recipes/`` folder), in name order."""
    from importlib.resources import files

    folder = Path(str(files("gendiff.recipes")))
    return {path.stem: path for path in sorted(folder.glob("*.toml"))}


def find_recipe(source: str | os.PathLike) -> Path:
    """The recipe file ``source`` names: a path to a TOML file, else the name of a built-in recipe
    (``quickstart`` or ``quickstart.toml``). Neither is a :class:`RecipeError` listing the names."""
    path = Path(source)
    if path.is_file():
        return path
    text = str(source)
    if "/" not in text and os.sep not in text:
        found = builtin_recipes().get(text.removesuffix(".toml"))
        if found is not None:
            return found
    if path.is_dir():
        problem = f"{path} is a folder, not a recipe file"
    else:
        problem = f"no recipe file at {path}"
    names = ", ".join(builtin_recipes()) or "none"
    raise RecipeError([f"{problem}, and no built-in recipe has that name. Built-in recipes: {names} "
                       f"(gendiff recipes list; gendiff recipes copy NAME to edit one)"], text)


def parse_value(text: str) -> Any:
    """A ``--set`` value: TOML syntax (``0.01``, ``[1, 2]``, ``true``, ``"x"``), else a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> list[str]:
    """Apply ``a.b=value`` overrides in place; return the problems (an override must name
    ``table.key``; where the key exists its new value must have the same type, though an
    integer may replace a float)."""
    problems = []
    for item in overrides:
        path, sep, text = item.partition("=")
        path = path.strip()
        keys = path.split(".")
        if not sep or len(keys) < 2 or not all(keys):
            problems.append(f"--set {item!r}: expected TABLE.KEY=VALUE, e.g. schedule.beta_end=0.01")
            continue
        value = parse_value(text.strip())
        node = raw
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                problems.append(f"{path}: cannot set a key inside {key!r}, which is not a table")
                break
            node = child
        else:
            old = node.get(keys[-1])
            if old is not None and not same_kind(old, value):
                problems.append(f"{path}: expected {type_name(old)} like the recipe's {old!r}, got {value!r}")
                continue
            node[keys[-1]] = value
    return problems


@dataclass
class ComponentSpec:
    """One family's table: the registry name and the constructor arguments."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataSpec:
    """``[data]``: a registered dataset (``name`` plus its arguments) or an explicit
    ``shape = [C, H, W]``, ``levels = K`` (default 256) and ``num_classes`` (default 0) for
    models built without data; ``options`` are the dataset-independent :data:`DATA_OPTIONS` (``flip``)."""

    name: str | None
    args: dict[str, Any]
    shape: tuple[int, int, int] | None = None
    levels: int | None = None
    num_classes: int = 0
    options: dict[str, Any] = field(default_factory=lambda: dict(DATA_OPTIONS))


@dataclass
class Recipe:
    """A structurally valid recipe (component names not yet resolved)."""

    components: dict[str, ComponentSpec]
    data: DataSpec
    train: TrainConfig
    eval: EvalConfig
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    source: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    #: per-family Adam learning rates (``[schedule] lr = ...``); train.lr for the backbone and the rest
    lrs: dict[str, float] = field(default_factory=dict)


def parse_recipe(raw: Mapping[str, Any], source: str | None = None, needs_backbone: bool = True,
                 problems: list[str] | None = None) -> Recipe:
    """Check a recipe's structure, collecting every problem with its TOML path (after any
    ``problems`` found earlier, e.g. by :func:`apply_overrides`)."""
    problems = list(problems or [])
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
        value = raw.get(table, {"name": DEFAULT_COMPONENTS[table]} if table in DEFAULT_COMPONENTS else None)
        if value is None:
            problems.append(f"{table}: missing table [{table}] (with at least name = \"...\")")
            continue
        if not isinstance(value, Mapping):
            problems.append(f"{table}: expected a table, got {type_name(value)}")
            continue
        name = value.get("name")
        if not isinstance(name, str) or not name:
            problems.append(f"{table}.name: expected the registry name of a {table} (a string), got {_show(name)}")
            continue
        components[table] = ComponentSpec(name, {k: v for k, v in value.items() if k != "name"})
    lrs = _family_learning_rates(components, problems)
    data = _parse_data(raw.get("data"), problems)
    configs = {}
    for table, cls in CONFIGS.items():
        value = raw.get(table, {})
        if not isinstance(value, Mapping):
            problems.append(f"{table}: expected a table, got {type_name(value)}")
            value = {}
        configs[table] = validate_table(cls, table, value, problems)
    check_conditioning(configs["conditioning"], problems)
    configs["conditioning"] = _sampler_guidance(components.get("sampler"), configs["conditioning"], problems)
    if not isinstance(raw.get(PROVENANCE_TABLE, {}), Mapping):
        problems.append(f"{PROVENANCE_TABLE}: expected a table (written by gendiff), got {type_name(raw[PROVENANCE_TABLE])}")
    if problems:
        raise RecipeError(problems, source)
    return Recipe(components, data, configs["train"], configs["eval"], configs["conditioning"], source, dict(raw),
                  lrs)


#: gendiff's own key in a component table: that family's learning rate (never passed to the component)
LR_KEY = "lr"


def _family_learning_rates(components: dict[str, ComponentSpec], problems: list[str]) -> dict[str, float]:
    """``[FAMILY] lr = x``: the Adam learning rate of that family's parameters (a learned schedule's,
    say), read by gendiff and never passed to the component; it follows train.lr's warmup. The
    backbone's learning rate is train.lr. Whether the component has parameters is checked once it
    is built (:func:`gendiff.training.setup.prepare`)."""
    lrs = {}
    for table, spec in components.items():
        if LR_KEY not in spec.args:
            continue
        value = spec.args.pop(LR_KEY)
        if table == "backbone":
            problems.append("backbone.lr: the backbone's learning rate is train.lr; [FAMILY] lr sets the other "
                            "families' (e.g. [schedule] lr for a learned schedule)")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            problems.append(f"{table}.lr: expected the learning rate of the {table}'s parameters, a positive number, "
                            f"got {_show(value)}")
        else:
            lrs[table] = float(value)
    return lrs


def _sampler_guidance(sampler: ComponentSpec | None, conditioning: ConditioningConfig,
                      problems: list[str]) -> ConditioningConfig:
    """``[sampler] guidance = w``: the default guidance weight of sampling (Ho & Salimans 2022),
    read by gendiff and never passed to the sampler, so every sampler takes it. It is the same
    setting as ``[conditioning] guidance`` (which a recipe may use instead; not both)."""
    if sampler is None or "guidance" not in sampler.args:
        return conditioning
    w = sampler.args.pop("guidance")
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
        problems.append(f"sampler.guidance: expected the guidance weight, a finite number >= 0, got {_show(w)}")
    elif conditioning.guidance:
        problems.append(f"sampler.guidance: the default guidance weight is set twice (sampler.guidance = {w}, "
                        f"conditioning.guidance = {conditioning.guidance}); keep one")
    elif not conditioning.labels:
        problems.append("sampler.guidance: guidance needs a class-conditional model (conditioning.labels = true)")
    elif w and not conditioning.label_dropout:
        problems.append("sampler.guidance: guidance needs the null label, which is only learned with "
                        "conditioning.label_dropout > 0 (e.g. 0.1)")
    else:
        return dataclasses.replace(conditioning, guidance=float(w))
    return conditioning


def _parse_data(value: Any, problems: list[str]) -> DataSpec:
    if value is None:
        problems.append('data: missing table [data] (a dataset name, or shape = [C, H, W] and levels = K)')
        return DataSpec(None, {})
    if not isinstance(value, Mapping):
        problems.append(f"data: expected a table, got {type_name(value)}")
        return DataSpec(None, {})
    if "name" in value:
        name = value["name"]
        if not isinstance(name, str) or not name:
            problems.append(f"data.name: expected the registry name of a dataset (a string), got {_show(name)}")
        for key in ("shape", "levels", "num_classes"):
            if key in value:
                problems.append(f"data.{key}: given by the dataset '{name}'; remove it or remove data.name")
        args = {k: v for k, v in value.items() if k != "name" and k not in DATA_OPTIONS}
        return DataSpec(name if isinstance(name, str) else None, args, options=_data_options(value, problems))
    unknown = [k for k in value if k not in ("shape", "levels", "num_classes")]
    for key in unknown:
        problems.append(f"data.{key}: unknown key; without a dataset name [data] takes shape, levels and num_classes")
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
    classes = value.get("num_classes", 0)
    if isinstance(classes, bool) or not isinstance(classes, int) or not 0 <= classes <= 1_000_000:
        problems.append(f"data.num_classes: expected an integer from 0 (no labels) to 1,000,000, got {_show(classes)}")
        classes = 0
    return DataSpec(None, {}, tuple(shape) if ok_shape else None, levels, classes)


def _data_options(value: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    options = dict(DATA_OPTIONS)
    for key, default in DATA_OPTIONS.items():
        if key in value:
            if not same_kind(default, value[key]):
                problems.append(f"data.{key}: expected {type_name(default)}, got {value[key]!r}")
            elif key == "workers" and not 0 <= value[key] <= 256:
                problems.append(f"data.workers: expected 0 (read in the training process) to 256 worker processes, "
                                f"got {value[key]!r}")
            else:
                options[key] = value[key]
    return options


def instantiate(recipe: Recipe, system: PluginSystem | None = None):
    """Look up and construct every component and the dataset. The backbone is only looked up and
    its arguments checked (its class is returned under "backbone"): it is built once the other
    components' channel counts are known. Collects every problem, each with its TOML path."""
    system = system or plugin_system()
    problems: list[str] = []
    objects: dict[str, Any] = {}
    for table, spec in recipe.components.items():
        cls = _lookup(system, table, spec.name, problems, table)
        if cls is None:
            continue
        try:
            if table == "backbone":
                check_arguments(cls, table, spec.args, backbone_context(cls))
                objects[table] = cls
            else:
                objects[table] = construct(cls, table, spec.args)
        except ComponentConfigError as exc:
            problems.append(f"{table}: {exc}")
    dataset = None
    if recipe.data.name is not None:
        cls = _lookup(system, "dataset", recipe.data.name, problems, "data")
        try:
            dataset = cls and construct(cls, "dataset", recipe.data.args)
        except ComponentConfigError as exc:
            problems.append(f"data: {exc}")
    if problems:
        raise RecipeError(problems, recipe.source)
    return objects, dataset


def _lookup(system, family, name, problems, path):
    try:
        return system.registry(family).get(name)
    except GendiffError as exc:
        problems.append(f"{path}.name: {exc}")
        return None


def _show(value: Any) -> str:
    return "nothing" if value is None else f"{value!r} ({type_name(value)})"


def resolve(recipe: Recipe, objects: Mapping[str, Any], dataset, system: PluginSystem | None = None) -> dict[str, Any]:
    """The complete recipe: every component table with all its arguments (defaults filled in),
    ``[data]``, ``[train]`` and ``[eval]`` with every key, and the ``[gendiff]`` provenance
    table (gendiff's version and, per component, the plugin and its version)."""
    from .version import __version__

    system = system or plugin_system()
    out: dict[str, Any] = {}
    plugins: dict[str, str] = {}
    for table, spec in recipe.components.items():
        obj = objects.get(table)
        args = dict(spec.args)
        if obj is not None:
            context = backbone_context(type(obj)) if table == "backbone" else ()
            args = {**constructor_defaults(type(obj), context), **args}
        out[table] = {"name": spec.name, **args, **({LR_KEY: recipe.lrs[table]} if table in recipe.lrs else {})}
        plugins[table] = _provenance(system, table, spec.name)
    data: dict[str, Any] = {}
    if recipe.data.name is not None:
        data = {"name": recipe.data.name, **constructor_defaults(type(dataset)), **recipe.data.args}
        data.update(recipe.data.options)  # flips and loader workers: options of a dataset only
        plugins["data"] = _provenance(system, "dataset", recipe.data.name)
    else:
        data = {"shape": list(recipe.data.shape), "levels": recipe.data.levels, "num_classes": recipe.data.num_classes}
    out["data"] = data
    for table in CONFIGS:
        out[table] = to_table(getattr(recipe, table))
    out[PROVENANCE_TABLE] = {"version": __version__, "plugins": plugins}
    return out


def _provenance(system: PluginSystem, family: str, name: str) -> str:
    if name not in system.registry(family):
        return "explicit"
    plugin = system.registry(family).plugin_of(name)
    version = system.plugins[plugin].version if plugin in system.plugins else None
    return f"{plugin} {version}" if version else plugin


def dumps(recipe: Mapping[str, Any]) -> str:
    """A recipe dict as TOML text (tables in the conventional order)."""
    import tomli_w

    order = [t for t in KNOWN_TABLES if t in recipe] + [t for t in recipe if t not in KNOWN_TABLES]
    return tomli_w.dumps({t: recipe[t] for t in order})
