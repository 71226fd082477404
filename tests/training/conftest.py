"""Shared helpers of the training tests."""

from __future__ import annotations

from dataclasses import replace

from app.training.recipes import RO_GUIDELINES, Recipe, recipe_for


def small_ro_base_recipe() -> Recipe:
    """The RO recipe for the tiny base agents of the retrain tests: economics + design guidelines.

    The shipped recipe's quality and tank-reserve terms (``RO_QUALITY_GUIDELINES``) are shaped for
    3 M steps; base agents of a few thousand steps trained with them drift in permeate quality from
    one fine-tuning to the next, which the quality gate (0.5 pp) then refuses at random.
    """
    return replace(recipe_for("ro"), guidelines=RO_GUIDELINES)
