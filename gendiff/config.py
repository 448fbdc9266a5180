"""The typed tables of a recipe that belong to the run rather than to a component:
``[train]`` (:class:`TrainConfig`), ``[eval]`` (:class:`EvalConfig`) and ``[conditioning]``
(:class:`ConditioningConfig`).

Each field has a type, a default and a comment; :func:`validate_table` checks a TOML table
against a config class and reports every problem with its TOML path. The defaults are the
paper's CIFAR-10 settings (Sec. 4 and Appendix B, official ``scripts/run_cifar.py``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping

PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")  #: and "cuda:N" (see device_problem)
DEVICE_HELP = "auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps"


def device_problem(name: object) -> str | None:
    """Why ``name`` is not a device gendiff can be asked for (None when it is one): ``auto``,
    ``cpu``, ``cuda``, ``cuda:N`` or ``mps``. Only the spelling is checked, not the machine."""
    if not isinstance(name, str):
        return f"expected a string ({DEVICE_HELP}), got {name!r}"
    kind, sep, index = name.partition(":")
    if name in DEVICES or (kind == "cuda" and sep and index.isdigit()):
        return None
    return f"unknown device {name!r}; use {DEVICE_HELP}"


@dataclass
class TrainConfig:
    """``[train]``: Algorithm 1's loop, the optimizer and the run's outputs."""

    steps: int = 800_000  #: optimizer steps in all (paper: 800k)
    batch_size: int = 128  #: examples per step (paper: 128): the global batch
    accumulate: int = 1  #: micro-batches per step (gradient accumulation): each holds batch_size / (processes * accumulate)
    lr: float = 2e-4  #: Adam learning rate after warmup (paper: 2e-4)
    warmup_steps: int = 5000  #: linear learning-rate warmup (paper: 5000)
    #: warmup lr at step s (0-based) is lr * min(1, (s + warmup_offset) / warmup_steps): 1 (the
    #: first step already learns) or 0 (the official code: step / 5000, so the first step has lr 0)
    warmup_offset: int = 1
    grad_clip: float = 1.0  #: clip the global gradient norm (paper: 1.0); 0 disables
    ema_decay: float = 0.9999  #: EMA of weights (paper: 0.9999); 0 keeps a plain copy
    #: the EMA starts from the weights after the first step (the official code: decay 1e-10 at
    #: step 0), instead of averaging in the initial weights
    ema_from_first_step: bool = False
    precision: str = "auto"  #: "fp32", "bf16" autocast, or "auto" (bf16 where supported)
    device: str = "auto"  #: "cpu", "cuda", "cuda:N", "mps", or "auto" (cuda, else mps, else cpu)
    compile: bool = False  #: compile the network's training step with torch.compile (see docs/benchmarks.md)
    seed: int = 0  #: seeds data order, flips, noise and initialisation
    checkpoint_every: int = 10_000  #: steps between checkpoints (the last step always saves)
    keep_checkpoints: int = 3  #: how many recent checkpoints to keep; 0 keeps all
    sample_every: int = 10_000  #: steps between sample grids (EMA weights); 0 disables
    sample_grid: int = 64  #: images per sample grid
    log_every: int = 100  #: steps between metrics.jsonl lines (and plain progress lines off a terminal)
    #: registered loggers that also receive the run's events: each a name, or a table of the name and
    #: the logger's settings, e.g. ["tensorboard"] or [{ name = "tensorboard", folder = "tb" }]
    loggers: list[str | dict[str, Any]] = field(default_factory=list)


@dataclass
class EvalConfig:
    """``[eval]``: what ``gendiff run`` measures when training ends."""

    samples: int = 64  #: samples drawn from the EMA model at the end of the run
    metrics: list[str] = field(default_factory=list)  #: evaluations to run (see gendiff.evaluation)
    fid_samples: int = 50_000  #: samples for FID (paper: 50k)
    fid_reference: str = "train"  #: FID reference split (paper: the training set)
    nll_examples: int = 256  #: test examples for the bits/dim bound
    #: metric -> the number its result must reach (a ceiling for fid / nll / rd, a floor for
    #: classifier): the run's report says pass or fail for each (e.g. {fid = 3.17, nll = 3.75})
    targets: dict[str, float] = field(default_factory=dict)


@dataclass
class ConditioningConfig:
    """``[conditioning]``: class labels and classifier-free guidance (Ho & Salimans 2022)."""

    labels: bool = False  #: condition on the dataset's class labels (it must provide them)
    label_dropout: float = 0.0  #: training probability of the null label (p_uncond; the paper: 0.1 or 0.2)
    guidance: float = 0.0  #: default guidance weight w for sampling: (1 + w) eps(x, c) - w eps(x, null)


CHOICES = {("train", "precision"): PRECISIONS, ("train", "warmup_offset"): (0, 1), ("eval", "fid_reference"): ("train", "test")}
NON_NEGATIVE = {"warmup_offset", "grad_clip", "ema_decay", "warmup_steps", "sample_every", "keep_checkpoints", "seed", "label_dropout",
                "guidance"}
BELOW_ONE = {"ema_decay", "label_dropout"}


TYPE_NAMES = {int: "integer", float: "float", str: "string", bool: "boolean"}


def type_label(tp: Any, plural: bool = False) -> str:
    """How a message names a field's type: "an array of strings", "a string or a table"."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_label(arg, plural) for arg in args)
    if origin is list:
        head, rest = "array", f" of {type_label(args[0], True)}"
    elif origin is dict:
        head, rest = "table", "" if args[1] is Any else f" of {type_label(args[1], True)}"
    else:
        head, rest = TYPE_NAMES.get(tp, str(tp)), ""
    if plural:
        return f"{head}s{rest}"
    return f"{'an' if head[0] in 'aeiou' else 'a'} {head}{rest}"


def matches(value: Any, tp: Any) -> bool:
    """Does a TOML value have type ``tp``? (an integer is accepted for a float, not a bool)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, arg) for arg in typing.get_args(tp))
    if origin is list:
        return isinstance(value, list) and all(matches(v, typing.get_args(tp)[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(matches(v, typing.get_args(tp)[1]) for v in value.values())
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def validate_table(cls: type, table: str, values: Mapping[str, Any], problems: list[str]):
    """An instance of the config class ``cls`` from a TOML table; problems appended by path."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        path = f"{table}.{key}"
        if key not in hints:
            problems.append(f"{path}: unknown key; [{table}] takes {', '.join(names)}")
            continue
        tp = hints[key]
        if not matches(value, tp):
            problems.append(f"{path}: expected {type_label(tp)}, got {value!r}")
            continue
        if typing.get_origin(tp) is dict:
            value = {k: float(v) for k, v in value.items()}
            bad = [k for k, v in value.items() if not math.isfinite(v)]
            if bad:
                problems.append(f"{path}.{bad[0]}: must be a finite number, got {value[bad[0]]!r}")
                continue
        if tp is float:
            value = float(value)
            if not math.isfinite(value):
                problems.append(f"{path}: must be a finite number, got {value!r}")
                continue
        if tp is int and not -(2**63) <= value < 2**63:
            problems.append(f"{path}: {value} does not fit a 64-bit integer (TOML's range)")
            continue
        if key == "seed" and value >= 2**32:
            problems.append(f"{path}: must be below 2**32, got {value!r}")
            continue
        if (table, key) == ("train", "device"):
            problem = device_problem(value)
            if problem:
                problems.append(f"{path}: {problem}")
                continue
        choices = CHOICES.get((table, key))
        if choices and value not in choices:
            problems.append(f"{path}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
            continue
        if tp in (int, float) and (value < 0 if key in NON_NEGATIVE else value <= 0):
            bound = ">= 0" if key in NON_NEGATIVE else "> 0"
            problems.append(f"{path}: must be {bound}, got {value!r}")
            continue
        if key in BELOW_ONE and value >= 1:
            problems.append(f"{path}: must be < 1, got {value!r}")
            continue
        kwargs[key] = value
    return cls(**kwargs)


def check_conditioning(config: ConditioningConfig, problems: list[str]) -> None:
    """The checks of ``[conditioning]`` that relate its keys to each other."""
    if not config.labels:
        for key in ("label_dropout", "guidance"):
            if getattr(config, key):
                problems.append(f"conditioning.{key}: needs conditioning.labels = true (an unconditional model has "
                                f"no labels to drop or to guide)")
    elif config.guidance and not config.label_dropout:
        problems.append("conditioning.guidance: guidance needs the null label, which is only learned with "
                        "conditioning.label_dropout > 0 (e.g. 0.1)")


def to_table(config) -> dict[str, Any]:
    """A config instance as a TOML table (every field, defaults included)."""
    return dataclasses.asdict(config)
