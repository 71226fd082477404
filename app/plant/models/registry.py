"""The process model class of each process name."""

from __future__ import annotations

from app.plant.models.base import ProcessModel
from app.plant.models.hsbro import HsbroModel
from app.plant.models.ro import RoModel
from app.plant.models.uf import UfModel

MODEL_CLASSES: dict[str, type[ProcessModel]] = {"ro": RoModel, "hsbro": HsbroModel, "uf": UfModel}
"""Process name → model class. ``md`` adds one entry here when its model lands (with its catalogue
in ``CATALOGS``, prices in ``economics.PRICES`` and baselines in ``baselines._registry``)."""


def model_class(process: str) -> type[ProcessModel]:
    """The model class simulating ``process``; raises ``KeyError`` listing the known processes."""
    try:
        return MODEL_CLASSES[process]
    except KeyError:
        known = ", ".join(sorted(MODEL_CLASSES))
        raise KeyError(f"unknown process {process!r}; known: {known}") from None
