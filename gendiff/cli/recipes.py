"""``gendiff recipes``: the built-in recipes (``list``, ``show``, ``copy``) and ``validate`` for any
recipe. A recipe is named by a path or by a built-in recipe's name (:func:`gendiff.recipe.find_recipe`)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import typer

from ..errors import GendiffError
from .common import SET_HELP, console, friendly, recipe_app

RecipeArg = typer.Argument(..., metavar="RECIPE", help="A recipe TOML file or a built-in recipe's name.")


def summary(path: Path) -> str:
    """A recipe's title: the first line of its leading comment (a built-in recipe has one)."""
    first = path.read_text(encoding="utf-8").partition("\n")[0]
    return first.lstrip("#").strip() if first.startswith("#") else "-"


def parameters(path: Path) -> int:
    """The network's parameter count, built on PyTorch's meta device (no memory, no initialisation,
    no data files needed)."""
    import torch

    from ..builder import build

    with torch.device("meta"):
        model = build(path)
    return sum(p.numel() for p in model.backbone.parameters())


@recipe_app.command("list")
@friendly
def recipes_list() -> None:
    """The built-in recipes: name, data, parameters and what each is for. Run one by name:
    gendiff run NAME."""
    from ..recipe import builtin_recipes, load_recipe

    rows = [(name, str(load_recipe(path)[0].get("data", {}).get("name", "-")), f"{parameters(path):,}", summary(path))
            for name, path in builtin_recipes().items()]
    widths = [max(len(row[i]) for row in rows + [("name", "data", "parameters", "")]) for i in range(3)]
    header = ("name", "data", "parameters", "what it is")
    for row in [header] + rows:  # one line each, whatever the terminal's width
        console.print(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}",
                      markup=False, highlight=False, soft_wrap=True)
    console.print("run one: gendiff run NAME; edit one: gendiff recipes copy NAME", highlight=False)


@recipe_app.command("show")
@friendly
def recipes_show(recipe: str = RecipeArg) -> None:
    """Print a recipe's TOML, comments included (where it came from first)."""
    from ..recipe import find_recipe

    path = find_recipe(recipe)
    console.print(f"# {path}", markup=False, highlight=False, soft_wrap=True)
    console.print(path.read_text(encoding="utf-8"), markup=False, highlight=False, end="", soft_wrap=True)


@recipe_app.command("copy")
@friendly
def recipes_copy(
    recipe: str = RecipeArg,
    dest: Optional[Path] = typer.Argument(None, help="A file or folder to copy to (default: NAME.toml here)."),
    force: bool = typer.Option(False, "--force", help="Replace a file that is already there."),
) -> None:
    """Copy a recipe to edit it, then run the copy: gendiff run ./NAME.toml. An existing file is
    never replaced without --force."""
    from ..recipe import find_recipe

    path = find_recipe(recipe)
    target = Path(dest) if dest is not None else Path(path.name)
    if target.is_dir():
        target = target / path.name
    if target.exists() and not force:
        raise GendiffError(f"{target} already exists; nothing was copied. Give another DEST, or --force to replace it.")
    if not target.parent.is_dir():
        raise GendiffError(f"the folder {target.parent} does not exist; nothing was copied.")
    if target.exists() and target.resolve() == path.resolve():
        raise GendiffError(f"{target} is the recipe itself; nothing was copied.")
    shutil.copyfile(path, target)
    console.print(f"copied {path.stem} to {target}; edit it, then: gendiff run {target}", highlight=False)


@recipe_app.command("validate")
@friendly
def recipes_validate(
    recipe: str = RecipeArg,
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Check a recipe completely (names, arguments, types, compatibility) and build its model."""
    from ..training import prepare

    setup = prepare(recipe, set_)
    params = sum(p.numel() for p in setup.model.backbone.parameters())
    names = ", ".join(f"{t} '{getattr(setup.model, t).name}'" for t in setup.spec.components)
    console.print(f"{recipe}: valid. {names}; data '{setup.spec.data.name}'; {params:,} parameters.")
