"""Hostile recipes. First a sweep: every key of the shipped digits recipes given huge, negative,
non-finite and wrong-typed values, or deleted. Then 1,000 seeded random mutations (missing,
extra and renamed tables and keys, values of every wrong type, huge and negative numbers, NaN
and infinities, junk strings, broken TOML, bad --set overrides). Every case must end in either
a clean error (exit code 1, one paragraph, no traceback) or a valid plan (``--dry-run``: recipe
parsed, components built, network probed); a sample of the valid ones then trains for real."""

import copy
import math
import random
from pathlib import Path

import pytest
import tomli_w
from typer.testing import CliRunner

from gendiff.cli import app
from gendiff.recipe import tomllib

ROOT = Path(__file__).resolve().parents[1]
BASES = {name: tomllib.loads((ROOT / "recipes" / f"{name}.toml").read_text())
         for name in ("quickstart", "ar_masking_digits")}
CASES = 1000
REAL_RUNS = 8

HOSTILE = [
    0, -1, -7, 1, 3, 2**31, 10**12, 2**63 - 1, -(2**63), 10**30,
    0.0, -0.0, -1.5, 0.5, 1e-300, 1e308, -1e308, math.inf, -math.inf, math.nan,
    "", "x", "digits", "unet", "eps", "auto", "fp64", "../../etc/passwd", "\x00", "é" * 50, "x" * 5000,
    True, False, [], [0], [-1, 2], [1, 2, 3, 4, 5, 6, 7, 8], [[1]], ["a"], [1.5], [10**12],
    {}, {"name": "x"}, {"a": {"b": 1}},
]
NAMES = ["linear", "cosine", "masking", "eps", "x0", "x0-logits", "v", "fixed-large", "learned", "categorical",
         "simple", "vlb", "hybrid", "masked-ce", "unet", "ancestral", "ddim", "dpm-solver++", "respaced",
         "digits", "cifar10", "image-folder", "nope", ""]
BAD_SETS = ["train.steps=abc", "nokey", "=1", "a.b.c=1", "train.steps=-5", "train=1", "train.steps",
            "schedule.name=\"masking\"", "backbone.channels=1e9", "eval.metrics=[\"fid\", 3]", "[x]=1",
            "train.batch_size=0", "train.lr=nan", "data.name=\"cifar10\"", "sampler.steps=100000000000"]


def paths(tree, prefix=()):
    for key, value in tree.items():
        yield prefix + (key,)
        if isinstance(value, dict):
            yield from paths(value, prefix + (key,))


def parent(tree, path):
    for key in path[:-1]:
        tree = tree[key]
    return tree


def mutate(rng: random.Random, base: dict) -> tuple[str, list[str], str]:
    """A hostile recipe: (TOML text, --set overrides, what was done)."""
    tree = copy.deepcopy(base)
    done = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        where = list(paths(tree))
        kind = rng.choice(["delete", "value", "value", "value", "extra-key", "extra-table", "rename", "name"])
        if kind == "delete" and where:
            path = rng.choice(where)
            del parent(tree, path)[path[-1]]
        elif kind == "value" and where:
            path = rng.choice(where)
            parent(tree, path)[path[-1]] = copy.deepcopy(rng.choice(HOSTILE))
        elif kind == "extra-key":
            tables = [p for p in where if isinstance(parent(tree, p)[p[-1]], dict)]
            target = tree
            if tables:
                path = rng.choice(tables)
                target = parent(tree, path)[path[-1]]
            target[rng.choice(["typo", "stepz", "name2", "channels"])] = copy.deepcopy(rng.choice(HOSTILE))
        elif kind == "extra-table":
            tree[rng.choice(["optimizer", "trian", "model", "gendiff", "backbone2"])] = {"x": rng.choice(HOSTILE[:20])}
        elif kind == "rename" and tree:
            old = rng.choice(list(tree))
            tree[old + rng.choice(["s", "_", "X"])] = tree.pop(old)
        elif kind == "name":
            table = rng.choice(["schedule", "parameterization", "variance", "weighting", "backbone", "sampler", "data"])
            tree.setdefault(table, {})
            if isinstance(tree[table], dict):
                tree[table]["name"] = rng.choice(NAMES)
        else:
            continue
        done.append(kind)
    text = tomli_w.dumps(tree)
    if rng.random() < 0.06:  # broken TOML
        cut = rng.randrange(len(text))
        text = text[:cut] + rng.choice(["", "[[", "= =", "\"", "\x01", "]"]) + text[cut:]
        done.append("broken-toml")
    sets = []
    if rng.random() < 0.1:
        sets = [rng.choice(BAD_SETS)]
        done.append("bad-set")
    return text, sets, "+".join(done)


def invoke(args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def check_clean(result, what):
    if result.exit_code == 0:
        return True
    flat = " ".join(result.output.split())
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (
        f"{what}: exit {result.exit_code}, {type(result.exception).__name__}: {result.exception}\n{result.output}")
    assert "error:" in flat, f"{what}: {result.output}"
    assert "Traceback" not in result.output, f"{what}: {result.output}"
    return False


SWEEP = [10**12, 2**63 - 1, -7, 0, math.nan, -math.inf, "x", True, [], {"a": 1}, "DELETE"]


def sweep():
    """Every key of every base recipe, given each of the SWEEP values (or deleted)."""
    for name in sorted(BASES):
        for path in paths(BASES[name]):
            for value in SWEEP:
                tree = copy.deepcopy(BASES[name])
                if value == "DELETE":
                    del parent(tree, path)[path[-1]]
                else:
                    parent(tree, path)[path[-1]] = copy.deepcopy(value)
                yield name, tomli_w.dumps(tree), [], f"{'.'.join(path)} = {value!r}"


def random_cases(rng):
    for _ in range(CASES):
        name = rng.choice(sorted(BASES))
        yield (name, *mutate(rng, BASES[name]))


@pytest.mark.slow
def test_a_thousand_hostile_recipes_end_in_a_clean_error_or_a_valid_plan(tmp_path):
    """All 1,902 cases (python -m pytest -m slow); CI runs every fourth (the next test)."""
    fuzz(tmp_path, every=1)


def test_a_quarter_of_the_hostile_recipes_end_in_a_clean_error_or_a_valid_plan(tmp_path):
    """Every fourth case of the sweep and of the random mutations (the same seeded cases as the
    whole fuzz), and 2 valid plans trained for real."""
    fuzz(tmp_path, every=4)


def fuzz(tmp_path, every: int) -> None:
    rng = random.Random(20261122)
    outcomes = {"error": 0, "valid": 0}
    valid = []
    cases = list(sweep()) + list(random_cases(rng))
    assert len(cases) >= 1000 + CASES // 2
    cases = cases[::every]
    for case, (name, text, sets, what) in enumerate(cases):
        path = tmp_path / f"case-{case}.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        args = ["run", path, "--dry-run", "--out", tmp_path / f"run-{case}"]
        for item in sets:
            args += ["--set", item]
        ok = check_clean(invoke(args), f"case {case} ({name}: {what})")
        outcomes["valid" if ok else "error"] += 1
        assert not (tmp_path / f"run-{case}").exists()  # a dry run writes nothing
        if ok and what:
            valid.append((case, path, sets))
    assert outcomes["error"] >= len(cases) // 2 and outcomes["valid"] >= 20 // every, outcomes  # both kinds exercised
    # some valid plans, trained for real (two steps, two samples)
    for case, path, sets in rng.sample(valid, max(2, REAL_RUNS // every)):
        capped = tomllib.loads(path.read_text())
        capped.setdefault("train", {}).update(steps=2, checkpoint_every=1, sample_every=0, batch_size=16)
        capped.setdefault("eval", {}).update(samples=2, metrics=[])
        capped.setdefault("sampler", {})
        path.write_text(tomli_w.dumps(capped))
        result = invoke(["run", path, "--out", tmp_path / f"real-{case}", "--no-progress", *sum((["--set", s] for s in sets), [])])
        if check_clean(result, f"real run of case {case}"):
            assert (tmp_path / f"real-{case}" / "checkpoints" / "step-2" / "manifest.json").is_file()
