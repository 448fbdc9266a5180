"""``gendiff.build``: a recipe in, a composed :class:`~gendiff.diffusion.Diffusion` out.

Everything a recipe can get wrong is found here, before any work starts: unknown names, wrong
or missing constructor arguments (all of them at once, by TOML path), incompatible components
(each requirement a component declares, with both components named), and a backbone that
cannot produce the output the parameterization and variance need.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from .component import construct
from .conditioning import Conditioning
from .diffusion import Diffusion
from .errors import ComponentConfigError, IncompatibleComponentsError, RecipeError
from .plugins import PluginSystem, plugin_system
from .recipe import load_recipe, parse_recipe, instantiate


def build(
    recipe: str | os.PathLike | Mapping[str, Any],
    model: nn.Module | Callable[[Tensor, Tensor], Tensor] | None = None,
    plugins: PluginSystem | None = None,
) -> Diffusion:
    """Assemble the diffusion model a recipe describes.

    Args:
        recipe: a TOML file path or a parsed mapping (see :mod:`gendiff.recipe`).
        model: for tests and experiments, an explicit network ``model(x_t, t) -> output`` (or
            ``model(x_t, t, cond)`` for a conditional recipe) used in place of the recipe's
            backbone (the recipe then has no ``[backbone]`` table). ``t`` is the schedule's
            network time: the paper's t in {1..T} as an integer tensor (B,) for a discrete
            schedule, 1000 t for a continuous one (:meth:`NoiseSchedule.network_time`). A
            diffusers ``UNet2DModel`` is accepted as it is: it is called with diffusers' t - 1
            and its output's ``.sample`` is taken (:mod:`gendiff.adapters`).
        plugins: the plugin system to look names up in (default: the process-wide one).

    Raises:
        RecipeError: the recipe is malformed, names unknown components or gives bad arguments.
        IncompatibleComponentsError: two components cannot work together.
    """
    system = plugins or plugin_system()
    if model is not None:  # a diffusers UNet2DModel takes t - 1 and returns an output object
        from .adapters import adapt_model

        try:
            model = adapt_model(model)
        except TypeError as exc:
            raise RecipeError([f"model: {exc}"]) from None
    raw, source = load_recipe(recipe)
    spec = parse_recipe(raw, source, needs_backbone=model is None)
    objects, dataset = instantiate(spec, system)
    shape = tuple(dataset.shape) if dataset is not None else spec.data.shape
    levels = dataset.levels if dataset is not None else spec.data.levels
    bind_problems = []
    for table, obj in objects.items():
        if table != "backbone":  # the backbone is built below, from the others' channel counts
            try:
                obj.bind(shape, levels)
            except ValueError as exc:
                bind_problems.append(f"{table}: {table} '{obj.name}': {exc}")
    if bind_problems:
        raise RecipeError(bind_problems, source)

    schedule, param, variance = objects["schedule"], objects["parameterization"], objects["variance"]
    conditioning = _conditioning(spec, dataset, source)
    channels, height = shape[0], shape[1]
    in_channels = channels + schedule.extra_input_channels
    out_channels = param.out_channels(channels, levels) + variance.out_channels(channels)
    needs = (
        f"parameterization '{param.name}' needs {param.out_channels(channels, levels)} output "
        f"channel(s) and variance '{variance.name}' {variance.out_channels(channels)}"
    )
    backbone_cls = objects.pop("backbone", None)
    check_compatibility(objects)
    if model is None:
        args = spec.components["backbone"].args
        context = {"in_channels": in_channels, "out_channels": out_channels, "image_size": height}
        if "class-labels" in getattr(backbone_cls, "provides", ()):
            context["num_classes"] = conditioning.num_classes
        elif conditioning.active:
            raise RecipeError([f"conditioning.labels: backbone '{backbone_cls.name}' does not take class labels (it does "
                               f"not provide \"class-labels\"); use one that does, e.g. unet, or set labels = false"],
                              source)
        try:
            _check_backbone_size(backbone_cls, args, context, source)
            model = construct(backbone_cls, "backbone", args, **context)
        except ComponentConfigError as exc:
            raise RecipeError([f"backbone: {exc} ({needs})"], source) from None
        except (RuntimeError, MemoryError) as exc:  # an allocation the machine cannot make
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RecipeError([f"backbone: backbone '{getattr(backbone_cls, 'name', '?')}' could not be "
                               f"created: {message}"], source) from None
        objects["backbone"] = model
        check_compatibility(objects)
        label = f"backbone '{model.name}'"
    else:
        label = "the explicit model"
    _check_output(model, (1, in_channels, *shape[1:]), (1, out_channels, *shape[1:]), schedule, conditioning, label,
                  needs)

    diffusion = Diffusion(
        schedule, param, variance, objects["weighting"], objects["sampler"], model, shape, levels,
        objects["time_sampler"], conditioning,
    )
    diffusion.recipe = raw
    diffusion.dataset = dataset
    return diffusion


#: bytes per parameter while training: float32 weights, gradients, Adam's two moments, the EMA
TRAINING_BYTES_PER_PARAMETER = 20


def memory_bytes() -> int | None:
    """This machine's physical memory, if the operating system says."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def _check_backbone_size(cls, args, context, source) -> None:
    """Build the backbone on PyTorch's meta device (no memory, no initialisation) and refuse one
    whose training state could not fit in this machine's memory, before anything is allocated."""
    try:
        with torch.device("meta"):
            probe = construct(cls, "backbone", args, **context)
    except ComponentConfigError:
        raise
    except Exception:  # noqa: BLE001 - a backbone that cannot be built on meta is checked for real
        return
    if not isinstance(probe, nn.Module):
        return
    count = sum(p.numel() for p in probe.parameters())
    need, have = count * TRAINING_BYTES_PER_PARAMETER, memory_bytes()
    if have and need > have:
        raise RecipeError([
            f"backbone: backbone '{getattr(cls, 'name', '?')}' would have {count:,} parameters; training needs "
            f"about {need / 2**30:,.1f} GiB for them (weights, gradients, Adam's moments, EMA), more than this "
            f"machine's {have / 2**30:,.1f} GiB. Choose a smaller configuration."
        ], source)


def check_compatibility(components: Mapping[str, Any]) -> None:
    """Refuse a mix in which a component's declared ``requires`` is not met by the component of
    another family; every unmet requirement is listed, naming both components."""
    problems = []
    for family, comp in components.items():
        for other_family, tags in getattr(comp, "requires", {}).items():
            other = components.get(other_family)
            if other is None:
                continue
            missing = set(tags) - set(getattr(other, "provides", ()))
            if missing:
                offers = ", ".join(sorted(getattr(other, "provides", ()))) or "nothing"
                problems.append(
                    f"{family} '{comp.name}' requires a {other_family} that provides "
                    f"{', '.join(sorted(missing))}, but {other_family} '{other.name}' provides {offers}"
                )
    if problems:
        raise IncompatibleComponentsError(
            "incompatible components: " + "; ".join(problems) + ". Choose components that fit together."
        )


def _conditioning(spec, dataset, source) -> Conditioning:
    """The model's :class:`Conditioning` from ``[conditioning]`` and the data's classes."""
    cfg = spec.conditioning
    if not cfg.labels:
        return Conditioning()
    classes = getattr(dataset, "num_classes", 0) if dataset is not None else spec.data.num_classes
    if not classes:
        where = (f"dataset '{dataset.name}' provides no class labels" if dataset is not None
                 else "the recipe's [data] has num_classes = 0; set data.num_classes")
        raise RecipeError([f"conditioning.labels: {where}, so there is nothing to condition on"], source)
    return Conditioning(classes, cfg.label_dropout, cfg.guidance)


def _check_output(model, in_shape, out_shape, schedule, conditioning, label, needs) -> None:
    """Run the network once on a blank input (with the null label for a conditional model) and
    check the output shape it produces."""
    training = getattr(model, "training", None)
    if training is not None:
        model.eval()
    try:
        params = next(iter(model.parameters()), None) if isinstance(model, nn.Module) else None
        device = params.device if params is not None else torch.device("cpu")
        dtype = params.dtype if params is not None else torch.get_default_dtype()
        t = schedule.network_time(schedule.times(schedule.timesteps, 1, device))
        extra = (torch.full((1,), conditioning.null, device=device),) if conditioning.active else ()
        with torch.no_grad():
            out = model(torch.zeros(in_shape, device=device, dtype=dtype), t, *extra)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a plugin's network raises is named, not a traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise IncompatibleComponentsError(
            f"{label} (from {type(model).__module__}) failed on a blank input of shape {tuple(in_shape)} "
            f"({type(exc).__name__}{': ' + first if first else ''}); {needs}, so it must return {tuple(out_shape)}."
        ) from None
    finally:
        if training:
            model.train()
    got = tuple(getattr(out, "shape", ()))
    if isinstance(out, torch.Tensor) and got == tuple(out_shape) and out.dtype != dtype:
        raise IncompatibleComponentsError(
            f"{label} returns {out.dtype} for an input of {dtype}: it must return the input's floating-point "
            f"type, so that training and sampling stay in one precision (autocast decides it, not the network)."
        )
    if got != tuple(out_shape):
        raise IncompatibleComponentsError(
            f"{label} returns output of shape {got} for an input of shape {tuple(in_shape)}, but "
            f"{needs}, so it must return {tuple(out_shape)}."
        )
