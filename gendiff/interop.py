"""diffusers' folder format in and out: ``gendiff import diffusers`` and ``gendiff export diffusers``.

A diffusers DDPM folder (``google/ddpm-cifar10-32`` and its siblings) holds a ``UNet2DModel``
(``unet/config.json`` and ``unet/diffusion_pytorch_model.safetensors``, or the legacy ``.bin``)
and a ``DDPMScheduler`` (``scheduler/scheduler_config.json``), tied by ``model_index.json``. Its
U-Net is the paper's (Appendix B), so it maps onto gendiff's ``unet`` backbone weight by weight;
its scheduler maps onto a schedule, a parameterization, a variance and the ancestral sampler.
Neither direction imports diffusers: the files are read and written here (safetensors and JSON;
a legacy ``.bin`` is read with ``torch.load(weights_only=True)``, which refuses pickled code).

Time convention, in one place: gendiff's network time is the paper's t in {1..T}; diffusers
indexes the same steps 0..T-1 (its timestep k is the paper's t = k + 1, and its network embeds k).
An imported network therefore gets ``[backbone] time_offset = 1`` (it embeds t - 1, exactly as
diffusers does). Exporting a network trained here with ``time_offset = 0`` folds the one-step
shift into the first layer of the time MLP (a rotation of each sine/cosine pair), so diffusers'
network computes the same function up to float32 rounding.
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .errors import GendiffError

WEIGHTS = "diffusion_pytorch_model.safetensors"
LEGACY_WEIGHTS = "diffusion_pytorch_model.bin"
#: diffusers' scheduler names -> gendiff's (schedule, parameterization, variance)
SCHEDULES = {"linear": "linear", "scaled_linear": "quadratic", "squaredcos_cap_v2": "cosine"}
PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
VARIANCES = {"fixed_small": "fixed-small", "fixed_small_log": "fixed-small", "fixed_large": "fixed-large",
             "fixed_large_log": "fixed-large", "learned_range": "learned-range"}


class InteropError(GendiffError):
    """A folder gendiff cannot read, or a model it cannot express in the other format."""


# -- reading a diffusers folder ------------------------------------------------------------------
def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InteropError(f"{path} is missing: a diffusers folder has it (nothing was written).")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InteropError(f"{path} is not valid JSON ({exc}); nothing was written.") from None
    if not isinstance(data, dict):
        raise InteropError(f"{path} must hold a JSON object; nothing was written.")
    return data


def read_weights(folder: Path) -> dict[str, Tensor]:
    """The U-Net's weights: safetensors, else the legacy ``.bin`` loaded with weights_only=True
    (a file that holds anything but tensors, e.g. pickled code, is refused)."""
    from safetensors.torch import load_file

    if (folder / WEIGHTS).is_file():
        try:
            return load_file(str(folder / WEIGHTS))
        except Exception as exc:  # noqa: BLE001 - safetensors' own error types
            raise InteropError(f"{folder / WEIGHTS} could not be read as safetensors ({exc}); nothing was written.") from None
    if (folder / LEGACY_WEIGHTS).is_file():
        try:
            state = torch.load(folder / LEGACY_WEIGHTS, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InteropError(
                f"{folder / LEGACY_WEIGHTS} was refused: it is not a plain file of tensors ({first}). gendiff "
                f"loads .bin weights with weights_only=True and never runs pickled code; convert it to "
                f"safetensors with a tool you trust. Nothing was written.") from None
        if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
            raise InteropError(f"{folder / LEGACY_WEIGHTS} does not hold a dict of tensors; nothing was written.")
        return state
    raise InteropError(f"{folder} has no {WEIGHTS} (or legacy {LEGACY_WEIGHTS}); nothing was written.")


def read_folder(path: str | Path) -> tuple[dict, dict[str, Tensor], dict]:
    """(U-Net config, U-Net weights, scheduler config) of a diffusers pipeline folder
    (``model_index.json``, ``unet/``, ``scheduler/``) or of a model folder (``config.json`` and the
    weights, with ``scheduler_config.json`` beside them or in ``../scheduler/``)."""
    path = Path(path)
    if not path.is_dir():
        raise InteropError(f"no folder at {path}; give a diffusers pipeline or model folder. Nothing was written.")
    if (path / "model_index.json").is_file():
        index = _json(path / "model_index.json")
        for part in ("unet", "scheduler"):
            if part not in index:
                raise InteropError(f"{path / 'model_index.json'} names no {part!r}: gendiff imports a DDPM pipeline "
                                   f"(a UNet2DModel and a scheduler). Nothing was written.")
        unet, scheduler = path / "unet", _json(path / "scheduler" / "scheduler_config.json")
    else:
        unet = path
        beside = [path / "scheduler_config.json", path.parent / "scheduler" / "scheduler_config.json"]
        found = next((p for p in beside if p.is_file()), None)
        if found is None:
            raise InteropError(f"{path} has no model_index.json (a pipeline) and no scheduler_config.json beside its "
                               f"config.json: the schedule cannot be known. Nothing was written.")
        scheduler = _json(found)
    config = _json(unet / "config.json")
    if config.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise InteropError(f"{unet / 'config.json'}: _class_name is {config['_class_name']!r}; gendiff imports a "
                           f"UNet2DModel. Nothing was written.")
    return config, read_weights(unet), scheduler


# -- configurations ------------------------------------------------------------------------------
def _refuse(field: str, value: Any, why: str) -> InteropError:
    return InteropError(f"the diffusers configuration has {field} = {value!r}, which gendiff's unet cannot "
                        f"represent: {why}. Nothing was written.")


def backbone_table(config: dict) -> dict[str, Any]:
    """The recipe's ``[backbone]`` table for a UNet2DModel configuration; a field gendiff's U-Net
    cannot represent is refused by name."""
    fixed = {"act_fn": "silu", "time_embedding_type": "positional", "flip_sin_to_cos": False, "freq_shift": 1,
             "center_input_sample": False, "mid_block_scale_factor": 1, "resnet_time_scale_shift": "default",
             "class_embed_type": None, "num_class_embeds": None, "add_attention": True, "norm_eps": 1e-6,
             "attn_norm_num_groups": None}
    why = {"act_fn": "its activation is SiLU", "time_embedding_type": "its time embedding is sinusoidal",
           "flip_sin_to_cos": "its embedding is [sin, cos]", "freq_shift": "its frequencies are 10000^(-i/(d/2 - 1))",
           "center_input_sample": "its input is used as it is", "mid_block_scale_factor": "it does not rescale",
           "resnet_time_scale_shift": "the time embedding is added, not a scale and shift",
           "class_embed_type": "labels come from gendiff's [conditioning]", "num_class_embeds": "it imports "
           "unconditional models", "add_attention": "its middle block has attention", "norm_eps": "GroupNorm's eps is 1e-6",
           "attn_norm_num_groups": "attention normalises with the residual blocks' groups"}
    for field, value in fixed.items():
        if field in config and config[field] != value:
            raise _refuse(field, config[field], why[field])
    blocks = config.get("block_out_channels")
    if not isinstance(blocks, list) or not blocks or blocks[0] <= 0 or any(c % blocks[0] for c in blocks):
        raise _refuse("block_out_channels", blocks, "every level's channels must be a multiple of the first's")
    size = config.get("sample_size")
    if isinstance(size, list):
        if len(set(size)) != 1:
            raise _refuse("sample_size", size, "its images are square")
        size = size[0]
    down, up = config.get("down_block_types", []), config.get("up_block_types", [])
    if len(down) != len(blocks) or len(up) != len(blocks):
        raise _refuse("down_block_types", down, "one down and one up block per entry of block_out_channels")
    attn = []
    for i, (kind, mirror) in enumerate(zip(down, reversed(up))):
        if kind not in ("DownBlock2D", "AttnDownBlock2D"):
            raise _refuse(f"down_block_types[{i}]", kind, "its blocks are DownBlock2D or AttnDownBlock2D")
        if mirror not in ("UpBlock2D", "AttnUpBlock2D") or (kind == "AttnDownBlock2D") != (mirror == "AttnUpBlock2D"):
            raise _refuse(f"up_block_types[{len(blocks) - 1 - i}]", mirror, "attention sits at the same resolutions "
                          "on the way up as on the way down")
        if kind == "AttnDownBlock2D":
            attn.append(size // 2**i)
    head = config.get("attention_head_dim")
    attended = [blocks[i] for i, kind in enumerate(down) if kind == "AttnDownBlock2D"] + [blocks[-1]]  # + the middle
    if head is not None and any(c != head for c in attended):
        raise _refuse("attention_head_dim", head, "its attention has one head (attention_head_dim = null, or the "
                      "channel count of every block with attention)")
    padding = config.get("downsample_padding", 1)
    if padding not in (0, 1):
        raise _refuse("downsample_padding", padding, "it pads 1 on every side, or as TensorFlow's SAME (0)")
    return {"name": "unet", "channels": blocks[0], "channel_mult": [c // blocks[0] for c in blocks],
            "num_res_blocks": int(config.get("layers_per_block", 2)), "attn_resolutions": attn,
            "dropout": float(config.get("dropout", 0.0)), "norm_groups": int(config.get("norm_num_groups", 32)),
            "time_offset": 1, "downsample_padding": "same" if padding == 0 else "symmetric"}


def scheduler_tables(config: dict) -> dict[str, dict[str, Any]]:
    """The recipe's schedule, parameterization, variance and sampler for a DDPMScheduler config."""
    def refuse(field, why):
        return InteropError(f"the scheduler configuration has {field} = {config.get(field)!r}, which gendiff cannot "
                            f"map: {why}. Nothing was written.")

    if config.get("trained_betas") is not None:
        raise refuse("trained_betas", "explicit betas are not one of gendiff's schedules")
    for field in ("thresholding", "rescale_betas_zero_snr"):
        if config.get(field):
            raise refuse(field, "gendiff's samplers clip x0_hat to [-1, 1] only")
    if float(config.get("clip_sample_range", 1.0)) != 1.0:
        raise refuse("clip_sample_range", "x0_hat is clipped to [-1, 1]")
    kind = config.get("beta_schedule", "linear")
    if kind not in SCHEDULES:
        raise refuse("beta_schedule", f"gendiff maps {', '.join(SCHEDULES)}")
    T = int(config.get("num_train_timesteps", 1000))
    schedule: dict[str, Any] = {"name": SCHEDULES[kind], "timesteps": T}
    if kind != "squaredcos_cap_v2":
        schedule.update(beta_start=float(config.get("beta_start", 1e-4)), beta_end=float(config.get("beta_end", 0.02)))
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in PREDICTIONS:
        raise refuse("prediction_type", f"gendiff maps {', '.join(PREDICTIONS)}")
    variance = config.get("variance_type", "fixed_small")
    if variance not in VARIANCES:
        raise refuse("variance_type", f"gendiff maps {', '.join(VARIANCES)}")
    return {"schedule": schedule, "parameterization": {"name": PREDICTIONS[prediction]},
            "variance": {"name": VARIANCES[variance]}, "weighting": {"name": "simple"},
            "sampler": {"name": "ancestral", "clip_x0": bool(config.get("clip_sample", True))}}


def diffusers_configs(recipe: dict, in_channels: int, out_channels: int, image_size: int) -> tuple[dict, dict]:
    """(UNet2DModel config, DDPMScheduler config) of a gendiff recipe, or a refusal naming the table."""
    back = recipe.get("backbone", {})
    if back.get("name") != "unet":
        raise InteropError(f"backbone {back.get('name')!r}: only gendiff's 'unet' has a diffusers counterpart.")
    if recipe.get("conditioning", {}).get("labels"):
        raise InteropError("conditioning.labels = true: DDPMPipeline samples unconditional models only.")
    if back.get("fourier_features"):
        raise InteropError(f"backbone.fourier_features = {back['fourier_features']}: diffusers' UNet2DModel has no "
                           f"Fourier-feature input.")
    names = {v: k for k, v in SCHEDULES.items()}
    schedule = recipe["schedule"]
    if schedule["name"] not in names or (schedule["name"] == "cosine" and (schedule.get("s", 0.008) != 0.008 or
                                                                           schedule.get("max_beta", 0.999) != 0.999)):
        raise InteropError(f"schedule {schedule['name']!r} (with its arguments) has no DDPMScheduler counterpart; "
                           f"linear, quadratic and the default cosine do.")
    predictions = {v: k for k, v in PREDICTIONS.items()}
    variances = {"fixed-small": "fixed_small", "fixed-large": "fixed_large", "learned-range": "learned_range"}
    for table, known in (("parameterization", predictions), ("variance", variances)):
        if recipe[table]["name"] not in known:
            raise InteropError(f"{table} {recipe[table]['name']!r} has no DDPMScheduler counterpart; "
                               f"{', '.join(known)} do.")
    mult, ch = back["channel_mult"], back["channels"]
    sizes = [image_size // 2**i for i in range(len(mult))]
    attn = set(back["attn_resolutions"])
    down = ["AttnDownBlock2D" if s in attn else "DownBlock2D" for s in sizes]
    unet = {
        "_class_name": "UNet2DModel", "_diffusers_version": _diffusers_version(), "sample_size": image_size,
        "in_channels": in_channels, "out_channels": out_channels, "block_out_channels": [ch * m for m in mult],
        "layers_per_block": back["num_res_blocks"], "down_block_types": down,
        "up_block_types": [b.replace("Down", "Up") for b in reversed(down)], "attention_head_dim": None,
        "norm_num_groups": back["norm_groups"], "norm_eps": 1e-6, "act_fn": "silu",
        "downsample_padding": 0 if back.get("downsample_padding") == "same" else 1, "flip_sin_to_cos": False,
        "freq_shift": 1, "time_embedding_type": "positional", "center_input_sample": False,
        "mid_block_scale_factor": 1, "dropout": back.get("dropout", 0.0), "add_attention": True,
        "resnet_time_scale_shift": "default",
    }
    scheduler = {
        "_class_name": "DDPMScheduler", "_diffusers_version": _diffusers_version(),
        "num_train_timesteps": schedule["timesteps"], "beta_schedule": names[schedule["name"]],
        "beta_start": schedule.get("beta_start", 1e-4), "beta_end": schedule.get("beta_end", 0.02),
        "prediction_type": predictions[recipe["parameterization"]["name"]],
        "variance_type": variances[recipe["variance"]["name"]],
        "clip_sample": bool(recipe.get("sampler", {}).get("clip_x0", True)), "trained_betas": None,
    }
    return unet, scheduler


def _diffusers_version() -> str:
    try:
        from importlib.metadata import version

        return version("diffusers")
    except Exception:  # noqa: BLE001 - not installed: a version every reader of the format accepts
        return "0.25.0"


# -- weights -------------------------------------------------------------------------------------
def name_pairs(net: nn.Module) -> list[tuple[str, str, str]]:
    """(gendiff module, diffusers module, kind) for every layer of gendiff's ``unet``; kind is
    ``res``, ``attn``, ``conv``, ``norm`` or ``linear``."""
    from .backbones.unet import Downsample, _Upsample

    pairs = [("temb.0", "time_embedding.linear_1", "linear"), ("temb.2", "time_embedding.linear_2", "linear"),
             ("conv_in", "conv_in", "conv")]
    pairs += _path_pairs(net.down, "down", Downsample, "downsamplers.0.conv", "0")
    pairs += [("mid.0", "mid_block.resnets.0", "res"), ("mid.1", "mid_block.attentions.0", "attn"),
              ("mid.2", "mid_block.resnets.1", "res")]
    pairs += _path_pairs(net.up, "up", _Upsample, "upsamplers.0.conv", "0.conv")
    pairs += [("norm_out", "conv_norm_out", "norm"), ("conv_out", "conv_out", "conv")]
    return pairs


def _path_pairs(path, side: str, resample: type, resample_name: str, resample_module: str) -> list[tuple[str, str, str]]:
    """The pairs of one path of the U-Net (``side`` "down" or "up"): per level, residual blocks
    (with their attention, if any), then the level's resampling layer."""
    from .backbones.unet import AttnBlock

    pairs, level, j = [], 0, 0
    for k, layers in enumerate(path):
        if isinstance(layers[0], resample):
            pairs.append((f"{side}.{k}.{resample_module}", f"{side}_blocks.{level}.{resample_name}", "conv"))
            level, j = level + 1, 0
            continue
        pairs.append((f"{side}.{k}.0", f"{side}_blocks.{level}.resnets.{j}", "res"))
        if len(layers) > 1 and isinstance(layers[1], AttnBlock):
            pairs.append((f"{side}.{k}.1", f"{side}_blocks.{level}.attentions.{j}", "attn"))
        j += 1
    return pairs


RES = (("norm1", "norm1"), ("conv1", "conv1"), ("temb", "time_emb_proj"), ("norm2", "norm2"), ("conv2", "conv2"),
       ("skip", "conv_shortcut"))


def to_gendiff(state: dict[str, Tensor], net: nn.Module) -> dict[str, Tensor]:
    """gendiff ``unet`` weights from a UNet2DModel's (the attention's q, k, v Linear layers become
    one 1x1 convolution). A missing or unused diffusers weight is an :class:`InteropError`."""
    out, used, names = {}, set(), set(net.state_dict())

    def take(name: str) -> Tensor:
        if name not in state:
            raise InteropError(f"the diffusers weights have no {name!r}, which the configuration implies; the "
                               f"folder is incomplete or its config.json does not describe its weights.")
        used.add(name)
        return state[name]

    for g, d, kind in name_pairs(net):
        for p in ("weight", "bias"):
            if kind == "res":
                for a, b in RES:
                    if f"{g}.{a}.{p}" in names:
                        out[f"{g}.{a}.{p}"] = take(f"{d}.{b}.{p}")
            elif kind == "attn":
                out[f"{g}.norm.{p}"] = take(f"{d}.group_norm.{p}")
                qkv = torch.cat([take(f"{d}.to_{x}.{p}") for x in "qkv"])
                out[f"{g}.qkv.{p}"] = qkv[:, :, None, None] if p == "weight" else qkv
                proj = take(f"{d}.to_out.0.{p}")
                out[f"{g}.proj.{p}"] = proj[:, :, None, None] if p == "weight" else proj
            else:
                out[f"{g}.{p}"] = take(f"{d}.{p}")
    unused = sorted(set(state) - used)
    if unused:
        raise InteropError(f"the diffusers weights hold {len(unused)} weight(s) that gendiff's unet has no place for "
                           f"(e.g. {unused[0]!r}); nothing was written.")
    return out


def to_diffusers(state: dict[str, Tensor], net: nn.Module, time_offset: int) -> dict[str, Tensor]:
    """A UNet2DModel's weights from gendiff ``unet`` weights; with ``time_offset = 0`` the one-step
    time shift is folded into ``time_embedding.linear_1`` (see the module docstring)."""
    out = {}
    for g, d, kind in name_pairs(net):
        for p in ("weight", "bias"):
            if kind == "res":
                for a, b in RES:
                    if f"{g}.{a}.{p}" in state:
                        out[f"{d}.{b}.{p}"] = state[f"{g}.{a}.{p}"]
            elif kind == "attn":
                out[f"{d}.group_norm.{p}"] = state[f"{g}.norm.{p}"]
                qkv = state[f"{g}.qkv.{p}"]
                qkv = qkv[:, :, 0, 0] if p == "weight" else qkv
                for x, part in zip("qkv", qkv.chunk(3)):
                    out[f"{d}.to_{x}.{p}"] = part.contiguous()
                proj = state[f"{g}.proj.{p}"]
                out[f"{d}.to_out.0.{p}"] = proj[:, :, 0, 0].contiguous() if p == "weight" else proj
            else:
                out[f"{d}.{p}"] = state[f"{g}.{p}"]
    if time_offset == 0:
        w = out["time_embedding.linear_1.weight"].double()
        out["time_embedding.linear_1.weight"] = (w @ shift_rotation(w.shape[1])).to(state["temb.0.weight"].dtype)
    return out


def shift_rotation(dim: int) -> Tensor:
    """R (float64, dim x dim) with e(t) = R e(t - 1) for the embedding e = [sin(t f), cos(t f)]:
    a network that embeds t computes W e(t) = (W R) e(t - 1), what diffusers' network computes
    with weights W R from its index t - 1."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / (half - 1))
    c, s = torch.cos(freqs), torch.sin(freqs)
    r = torch.zeros(dim, dim, dtype=torch.float64)
    idx = torch.arange(half)
    # sin(t f) = sin((t-1) f) cos f + cos((t-1) f) sin f;  cos(t f) = cos((t-1) f) cos f - sin((t-1) f) sin f
    r[idx, idx], r[idx, idx + half] = c, s
    r[idx + half, idx + half], r[idx + half, idx] = c, -s
    return r


# -- whole folders -------------------------------------------------------------------------------
def import_diffusers(path: str | Path, out: str | Path, data: str | None = None) -> Path:
    """Write a gendiff run folder (resolved recipe, one verified checkpoint ``step-0`` whose model
    and EMA weights are the diffusers weights) from a diffusers folder. ``data`` names the dataset
    the model was trained on (e.g. ``cifar10``), for the commands that need real images (eval nll,
    interpolate, FID against train/test); without it the recipe records the data's shape only.
    Nothing is written unless everything maps; an existing non-empty ``out`` is refused."""
    import tomli_w

    from .builder import build
    from .checkpoint import save_checkpoint
    from .recipe import parse_recipe, resolve

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InteropError(f"{out} already exists and is not empty; choose a new run folder (nothing was written).")
    config, weights, scheduler = read_folder(path)
    recipe = {**scheduler_tables(scheduler), "backbone": backbone_table(config)}
    channels, size = int(config.get("in_channels", 3)), config.get("sample_size", 32)
    size = size[0] if isinstance(size, list) else int(size)
    recipe["data"] = {"name": data} if data else {"shape": [channels, size, size], "levels": 256}
    recipe["eval"] = {"samples": 64}
    model = build(recipe)
    if tuple(model.data_shape) != (channels, size, size):
        raise InteropError(f"dataset {data!r} holds {tuple(model.data_shape)} images, but the diffusers U-Net takes "
                           f"{(channels, size, size)}; nothing was written.")
    expected = model.backbone.conv_out.out_channels
    if int(config.get("out_channels", channels)) != expected:
        raise _refuse("out_channels", config.get("out_channels"), f"the scheduler's prediction and variance need "
                      f"{expected} output channels")
    state = to_gendiff(weights, model.backbone)
    from .checkpoint import load_weights

    load_weights(model.backbone, state, Path(path))  # every name and shape, checked before anything is written
    spec = parse_recipe(recipe)
    objects = {table: getattr(model, table) for table in spec.components}
    text = tomli_w.dumps(resolve(spec, objects, model.dataset))
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.toml").write_text(text)
    save_checkpoint(out, 0, state, state, {"step": 0, "imported_from": str(Path(path).resolve())}, text)
    return out


def export_diffusers(run: str | Path, out: str | Path, ema: bool = True, checkpoint: str | Path | None = None) -> Path:
    """Write the run's model as a diffusers DDPM pipeline folder that
    ``diffusers.DDPMPipeline.from_pretrained(out)`` loads (``model_index.json``, ``unet/``,
    ``scheduler/``). An existing non-empty ``out`` is refused."""
    from safetensors.torch import save_file

    from .runs import load_run

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InteropError(f"{out} already exists and is not empty; choose a new folder (nothing was written).")
    model, ckpt = load_run(run, checkpoint, ema=ema)
    net = model.backbone
    unet, scheduler = diffusers_configs(model.recipe, net.conv_in.in_channels, net.conv_out.out_channels,
                                        model.data_shape[1])
    if net.conv_in.in_channels != model.data_shape[0]:
        raise InteropError("the schedule adds input channels (a masking diffusion): DDPMPipeline cannot feed them.")
    state = to_diffusers({k: v.detach().cpu() for k, v in net.state_dict().items()}, net, net.time_offset)
    (out / "unet").mkdir(parents=True, exist_ok=True)
    (out / "scheduler").mkdir(exist_ok=True)
    (out / "unet" / "config.json").write_text(json.dumps(unet, indent=2))
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "unet" / WEIGHTS))
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler, indent=2))
    (out / "model_index.json").write_text(json.dumps({
        "_class_name": "DDPMPipeline", "_diffusers_version": _diffusers_version(),
        "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]}, indent=2))
    return out
