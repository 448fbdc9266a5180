"""Errors that gendiff reports to a user as one paragraph, never as a traceback.

Every error a user can cause (an unknown component name, a bad recipe value, an incompatible
mix of components, a plugin that clashes with another) is a :class:`GendiffError`. The CLI prints
its message and exits non-zero; library callers can catch the base class.
"""

from __future__ import annotations


class GendiffError(Exception):
    """Base class: a problem with the user's input, explained in the message."""


class PluginError(GendiffError):
    """A plugin problem: a duplicate component name, a hook that returned something invalid."""


class DuplicateNameError(PluginError):
    """Two plugins register one name in one family: there is no safe choice between them."""


class UnknownComponentError(GendiffError, KeyError):
    """A registry lookup for a name that no plugin registered."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0]


class ComponentConfigError(GendiffError):
    """A component's constructor arguments are wrong, missing or out of range."""


class IncompatibleComponentsError(GendiffError):
    """Two components of a recipe cannot work together; the message names both."""


class RecipeError(GendiffError):
    """A recipe is malformed. ``problems`` lists each problem with its TOML path."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"the recipe{where} has {len(self.problems)} problem(s):\n{lines}")


class TrainingError(GendiffError):
    """Training cannot go on (a non-finite loss, an unusable run folder, nothing to resume, no device)."""


class BackboneError(GendiffError):
    """A network (a plugin's included) failed or returned something unusable while the model ran;
    the message names it and its module. Nothing is written for the step or batch it failed on."""
