"""Recipes: a whole pipeline (train, export, bench, gate, …) in one YAML file, run with ``edgecnn run``."""

from edgecnn.recipe.recipe import Recipe, RecipeError, load_recipe
from edgecnn.recipe.run import RunResult, run_recipe

__all__ = ["Recipe", "RecipeError", "RunResult", "load_recipe", "run_recipe"]
