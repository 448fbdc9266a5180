"""gendiff's built-in recipes: this folder is installed as the package ``gendiff.recipes``, so a
recipe is found by its name (``gendiff run quickstart``) from a wheel as from a clone
(:func:`gendiff.recipe.find_recipe`; ``gendiff recipes list|show|copy``)."""
