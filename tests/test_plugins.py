"""The plugin system: hooks, registries, entry-point discovery and its failure modes."""

import inspect
import json
import textwrap
import types
import warnings

import pytest

import gendiff
from gendiff import hookspecs, testing
from gendiff.errors import PluginError, UnknownComponentError
from gendiff.plugins import EVENT_HOOKS, HOOKS, PluginLoadWarning, create_plugin_system, plugin_system, registry
from gendiff.schedules import LinearSchedule


def make_plugin(name, **hooks):
    """A plugin object whose hooks return the given lists."""
    mod = types.ModuleType(name)
    for hook, value in hooks.items():
        def impl(value=value):
            return value
        impl.__name__ = hook
        setattr(mod, hook, gendiff.hookimpl(impl))
    return mod


def write_dist(tmp_path, dist, version, module, source, ep_name=None):
    """A hand-made installed distribution: a module plus a *.dist-info folder with entry points."""
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    info = tmp_path / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[gendiff]\n{ep_name or dist} = {module}\n")


PLUGIN_SOURCE = """
    import torch, gendiff
    from gendiff.schedules import GaussianSchedule

    class Flat(GaussianSchedule):
        name = "flat"
        def betas(self):
            return torch.full((self.timesteps,), 0.01, dtype=torch.float64)

    @gendiff.hookimpl
    def gendiff_register_schedules():
        return [Flat]
"""


def test_every_family_has_one_prefixed_documented_hook():
    names = [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(f, "gendiff_spec")]
    assert sorted(names) == sorted([*HOOKS.values(), *EVENT_HOOKS])
    for n in names:
        assert n.startswith("gendiff_")
        doc = getattr(hookspecs, n).__doc__
        assert doc and "@gendiff.hookimpl" in doc, f"{n} needs a docstring with an example"


def _examples():
    for family, hook in HOOKS.items():
        doc = inspect.getdoc(getattr(hookspecs, hook))
        lines = doc.splitlines()
        start = next(i for i, line in enumerate(lines) if line.rstrip().endswith("::")) + 1
        block = []
        for line in lines[start:]:
            if line and not line.startswith(" "):
                break
            block.append(line)
        yield family, hook, textwrap.dedent("\n".join(block))


CHECKS = {
    "schedule": testing.check_schedule,
    "parameterization": testing.check_parameterization,
    "variance": testing.check_variance,
    "weighting": testing.check_weighting,
    "sampler": testing.check_sampler,
    "dataset": testing.check_dataset,
    "time_sampler": testing.check_time_sampler,
    "metric": testing.check_metric,
    "logger": testing.check_logger,
}


@pytest.mark.parametrize("family, hook, code", list(_examples()), ids=lambda v: v if v in HOOKS else "")
def test_hook_docstring_examples_run_and_conform(family, hook, code):
    namespace = {}
    exec(compile(code, f"<{hook} example>", "exec"), namespace)
    plugin = types.ModuleType(f"example_{family}")
    plugin.__dict__.update(namespace)
    system = create_plugin_system(extra_plugins=[("example", plugin)], autoload=False)
    names = system.plugins["example"].components[family]
    assert len(names) == 1
    cls = system.registry(family).get(names[0])
    assert system.registry(family).plugin_of(names[0]) == "example"
    if family == "backbone":
        testing.check_backbone(cls)
    else:
        CHECKS[family](testing.example_instance(cls))


def test_builtins_register_through_the_hooks():
    system = create_plugin_system(autoload=False)
    builtins = system.plugins["gendiff"].components  # what gendiff itself registers (no autoload here)
    assert builtins["schedule"] == ["linear", "cosine", "quadratic", "vp-cosine", "vp-linear", "masking",
                                     "vdm-fixed", "vdm-learned-endpoints", "vdm-learned"]
    assert system.registry("schedule").plugin_of("linear") == "gendiff"
    assert builtins["parameterization"] == ["eps", "x0", "mu", "v", "score", "x0-logits"]
    assert builtins["variance"] == ["fixed-large", "fixed-small", "learned", "learned-range", "categorical"]
    assert builtins["weighting"] == ["simple", "vlb", "mse-mu", "hybrid", "min-snr", "p2", "vdm", "vdm-discrete",
                                      "masked-ce"]
    assert builtins["time_sampler"] == ["uniform", "loss-second-moment", "low-discrepancy"]


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(UnknownComponentError) as err:
        registry("schedule").get("linaer")
    assert "unknown schedule 'linaer'" in str(err.value)
    assert all(name in str(err.value) for name in ("cosine", "linear", "masking", "quadratic", "vp-cosine"))
    with pytest.raises(UnknownComponentError, match="Families"):
        registry("scheduler")


def test_same_name_from_two_plugins_is_an_error_naming_both():
    class Clash(LinearSchedule):
        pass

    with pytest.raises(PluginError) as err:
        create_plugin_system(extra_plugins=[("clashing-plugin", make_plugin("x", gendiff_register_schedules=[Clash]))],
                             autoload=False)
    msg = str(err.value)
    assert "'linear'" in msg and "'gendiff'" in msg and "'clashing-plugin'" in msg


def test_malformed_registrations_are_refused_naming_the_plugin():
    """A nameless class, a hook that returns no list, and a class of another family (or no
    component at all) are refused at registration with a warning naming the plugin and the
    families; the plugin's error is recorded and everything else keeps working."""
    from gendiff.samplers import Ancestral

    class Nameless(LinearSchedule):
        name = ""

    cases = [
        ("gendiff_register_schedules", [Nameless], "bad-plugin.*without a 'name'"),
        ("gendiff_register_schedules", LinearSchedule, "bad-plugin.*must return a list"),
        ("gendiff_register_schedules", [Ancestral],
         r"plugin 'bad-plugin' returned Ancestral from gendiff_register_schedules, but it is a sampler, not a "
         r"schedule: a schedule must subclass gendiff.schedules.NoiseSchedule"),
        ("gendiff_register_samplers", [dict], r"returned dict from gendiff_register_samplers, but it is .*not a "
                                              r"component class"),
        ("gendiff_register_metrics", [LinearSchedule], "it is a schedule, not a metric"),
    ]
    for hook, value, message in cases:
        with pytest.warns(PluginLoadWarning, match=message):
            system = create_plugin_system(extra_plugins=[("bad-plugin", make_plugin("x", **{hook: value}))],
                                          autoload=False)
        assert system.plugins["bad-plugin"].error and "linear" in system.registry("schedule")
        assert "ancestral" in system.registry("sampler") and "ancestral" not in system.registry("schedule")


def test_entry_point_discovery_from_a_hand_made_dist_info(tmp_path, monkeypatch):
    write_dist(tmp_path, "gendiff-flat", "1.2.3", "gendiff_flat", PLUGIN_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("GENDIFF_DISABLE_PLUGINS", raising=False)
    system = create_plugin_system()
    assert "flat" in system.registry("schedule")
    assert system.registry("schedule").plugin_of("flat") == "gendiff-flat"
    info = system.plugins["gendiff-flat"]
    assert info.version == "1.2.3" and info.error is None and info.components == {"schedule": ["flat"]}
    testing.check_schedule(system.registry("schedule").get("flat")(timesteps=20))
    # and a recipe can use it by name
    model = gendiff.build({
        "schedule": {"name": "flat", "timesteps": 10}, "parameterization": {"name": "eps"},
        "variance": {"name": "fixed-large"}, "weighting": {"name": "simple"}, "sampler": {"name": "ancestral"},
        "data": {"shape": [1, 2, 2]},
    }, model=lambda x, t: x, plugins=system)
    assert model.schedule.name == "flat"


def test_a_plugin_that_fails_to_import_warns_and_the_rest_works(tmp_path, monkeypatch):
    write_dist(tmp_path, "gendiff-broken", "0.1", "gendiff_broken", "raise ImportError('needs libfoo')\n")
    write_dist(tmp_path, "gendiff-flat", "1.0", "gendiff_flat", PLUGIN_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("GENDIFF_DISABLE_PLUGINS", raising=False)
    with pytest.warns(PluginLoadWarning, match="gendiff-broken.*needs libfoo"):
        system = create_plugin_system()
    assert "needs libfoo" in system.plugins["gendiff-broken"].error
    assert "flat" in system.registry("schedule") and "linear" in system.registry("schedule")


def test_a_hook_that_raises_warns_and_is_skipped():
    def boom():
        raise RuntimeError("kaput")

    plugin = types.ModuleType("boom")
    boom.__name__ = "gendiff_register_samplers"
    plugin.gendiff_register_samplers = gendiff.hookimpl(boom)
    with pytest.warns(PluginLoadWarning, match="'boomer'.*kaput"):
        system = create_plugin_system(extra_plugins=[("boomer", plugin)], autoload=False)
    assert "ancestral" in system.registry("sampler")
    assert "kaput" in system.plugins["boomer"].error


def test_disable_and_allow_list_environment_variables(tmp_path, monkeypatch):
    write_dist(tmp_path, "gendiff-flat", "1.0", "gendiff_flat", PLUGIN_SOURCE)
    write_dist(tmp_path, "gendiff-broken", "0.1", "gendiff_broken", "raise ImportError('x')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("GENDIFF_DISABLE_PLUGINS", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        system = create_plugin_system()
    assert "flat" not in system.registry("schedule") and "linear" in system.registry("schedule")
    assert set(system.plugins) == {"gendiff"}
    monkeypatch.delenv("GENDIFF_DISABLE_PLUGINS")
    monkeypatch.setenv("GENDIFF_PLUGINS", "gendiff-flat")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the broken one is not even imported
        system = create_plugin_system()
    assert "flat" in system.registry("schedule") and "gendiff-broken" not in system.plugins


def test_the_process_wide_system_is_cached():
    assert plugin_system() is plugin_system()


def _plugin_doc_blocks():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    return text, re.findall(r"### `(gendiff_\w+)\(\) -> list\[type\]`.*?```python\n(.*?)```", text, flags=re.S)


def test_every_hook_is_documented_in_the_plugin_guide():
    text, blocks = _plugin_doc_blocks()
    assert sorted(hook for hook, _ in blocks) == sorted(HOOKS.values())


@pytest.mark.parametrize("hook", sorted(HOOKS.values()))
def test_each_hooks_guide_example_registers_and_conforms(hook):
    """Every hook has a test of its own: its documented example, registered as a plugin."""
    _, blocks = _plugin_doc_blocks()
    code = dict(blocks)[hook]
    family = next(f for f, h in HOOKS.items() if h == hook)
    namespace = {}
    exec(compile(code, f"<docs/plugins.md {hook}>", "exec"), namespace)
    plugin = types.ModuleType(f"doc_{family}")
    plugin.__dict__.update(namespace)
    system = create_plugin_system(extra_plugins=[("doc", plugin)], autoload=False)
    (name,) = system.plugins["doc"].components[family]
    cls = system.registry(family).get(name)
    if family == "backbone":
        testing.check_backbone(cls)
    else:
        CHECKS[family](testing.example_instance(cls))


def test_the_guides_own_example_schedule_works():
    text, _ = _plugin_doc_blocks()
    import re

    code = re.search(r"# my_package/plugin.py\n(.*?)```", text, flags=re.S).group(1)
    namespace = {}
    exec(code, namespace)
    testing.check_schedule(namespace["Exponential"](timesteps=50))


EVENT_FILES = {"gendiff_train_step_end": "my-log.jsonl", "gendiff_checkpoint_written": "latest.txt",
               "gendiff_samples_written": "pictures.txt", "gendiff_run_end": "summary.json"}


def _event_examples():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    docs = dict(re.findall(r"### `(gendiff_\w+)\(run, [^`]*\)`.*?```python\n(.*?)```", text, flags=re.S))
    for hook in EVENT_HOOKS:
        doc = inspect.getdoc(getattr(hookspecs, hook)).split("::", 1)[1]
        yield hook, "docstring", textwrap.dedent(doc)
        yield hook, "guide", docs.get(hook, "")


def _tiny_run_recipe():
    from fakes import digits_recipe

    return digits_recipe(timesteps=10, channels=8, steps=2, batch_size=8, checkpoint_every=1, sample_every=1,
                         sample_grid=4, samples=4)


@pytest.mark.parametrize("hook, where, code", list(_event_examples()), ids=lambda v: v if isinstance(v, str) and
                         len(v) < 40 else "")
def test_each_event_hooks_examples_run(tmp_path, hook, where, code):
    """Both the hook's docstring example and the guide's run: registered as a plugin, they see a
    tiny `gendiff run` and write what they say."""
    from gendiff.runner import run

    assert code, f"docs/plugins.md has no example for {hook}"
    namespace = {}
    exec(compile(code, f"<{hook} {where} example>", "exec"), namespace)
    plugin = types.ModuleType(f"events_{hook}")
    plugin.__dict__.update(namespace)
    system = create_plugin_system(extra_plugins=[("events", plugin)], autoload=False)
    run(_tiny_run_recipe(), out=tmp_path / "run", progress=False, plugins=system)
    written = (tmp_path / "run" / EVENT_FILES[hook]).read_text()
    if hook == "gendiff_train_step_end":
        assert [json.loads(line)["step"] for line in written.splitlines()] == [1, 2]
    elif hook == "gendiff_checkpoint_written":
        assert written == "2 step-2\n"
    elif hook == "gendiff_samples_written":
        assert [line.split()[0] for line in written.splitlines()] == ["1", "2", "2"]
        assert written.splitlines()[-1].endswith("samples/final.png")
    else:
        assert json.loads(written)["trained_steps"] == 2


def test_a_failing_event_hook_warns_once_and_the_run_goes_on(tmp_path):
    from gendiff.events import PluginRuntimeWarning
    from gendiff.runner import run

    calls = []

    def gendiff_train_step_end(step):
        calls.append(step)
        raise OSError("the log server is down")

    plugin = types.ModuleType("flaky")
    plugin.gendiff_train_step_end = gendiff.hookimpl(gendiff_train_step_end)
    system = create_plugin_system(extra_plugins=[("flaky-logger", plugin)], autoload=False)
    with pytest.warns(PluginRuntimeWarning, match="'flaky-logger' failed in gendiff_train_step_end.*log server is down"):
        result = run(_tiny_run_recipe(), out=tmp_path / "run", progress=False, plugins=system)
    assert calls == [1] and result["trained_steps"] == 2  # switched off after its failure; the run finished
    assert (tmp_path / "run" / "checkpoints" / "step-2").is_dir()
