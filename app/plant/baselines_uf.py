"""UF baselines: base control and rule-based backwash / CEB / CIP on TMP triggers (§5, §12)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from app.plant.base_control import UfBaseControl, UfDesign
from app.plant.catalog import ProcessCatalog
from app.plant.models.base import FloatArray, Policy


class UfRuleBased(UfBaseControl):
    """Cleaning on measured TMP instead of the calendar [P23–P25, P28].

    - Backwash when the TMP has risen by ``bw_rise`` (fraction) since the start of the filtration
      cycle; the PLC's cycle timer runs at its longest (60 min) as a backstop.
    - CEB when the TMP after backwash has risen by ``ceb_rise`` above its value after the last
      CEB, or every ``ceb_max_h`` at the latest.
    - CIP when the PLC flags its normalised TMP trigger (``cip_due``), at most every
      ``cip_min_interval_h``.
    """

    name = "rule_based"

    def __init__(
        self,
        catalog: ProcessCatalog,
        design: UfDesign | None = None,
        bw_rise: float = 0.15,
        ceb_rise: float = 0.20,
        ceb_max_h: float = 48.0,
        cip_min_interval_h: float = 72.0,
    ) -> None:
        base = design or UfDesign()
        super().__init__(
            catalog,
            UfDesign(base.flux_lmh, 60.0, base.bw_duration_s, ceb_max_h, 1e9),
        )
        self.bw_rise, self.ceb_rise = bw_rise, ceb_rise
        self.cip_min_interval_h = cip_min_interval_h
        self._ceb_ref: FloatArray = np.zeros(0)

    def reset(self, n: int, rng: np.random.Generator) -> None:
        """Forget the post-CEB TMP reference."""
        self._ceb_ref = np.full(n, np.nan)

    def act(
        self, measurements: Mapping[str, FloatArray], t_s: float, dt_s: float
    ) -> dict[str, FloatArray]:
        """Fixed flux; backwash, CEB and CIP requests from the TMP rules."""
        out = super().act(measurements, t_s, dt_s)
        m = measurements
        n = np.asarray(m["tmp_bar"]).size
        if self._ceb_ref.size != n:
            self.reset(n, np.random.default_rng(0))
        state = np.asarray(m["uf_state"], dtype=np.float64)
        tmp = np.asarray(m["tmp_bar"], dtype=np.float64)
        tmp0 = np.asarray(m["tmp_cycle_start_bar"], dtype=np.float64)
        since_ceb = np.asarray(m["hours_since_ceb_h"], dtype=np.float64)
        since_cip = np.asarray(m["hours_since_cip_h"], dtype=np.float64)
        filtering = state == 0
        fresh = filtering & (since_ceb * 60.0 < 90.0)
        self._ceb_ref = np.where(fresh | np.isnan(self._ceb_ref), tmp0, self._ceb_ref)
        cip_due = np.asarray(m["cip_due"], dtype=np.float64) >= 0.5
        cip = filtering & cip_due & (since_cip >= self.cip_min_interval_h)
        ceb = ~cip & (state <= 1) & (tmp0 >= (1.0 + self.ceb_rise) * self._ceb_ref)
        ceb |= ~cip & np.asarray(out["ceb_request"], dtype=bool)
        bw = ~cip & ~ceb & filtering & (tmp >= (1.0 + self.bw_rise) * tmp0) & (tmp0 > 0.0)
        out["bw_request"] = bw.astype(np.float64)
        out["ceb_request"] = ceb.astype(np.float64)
        out["cip_request"] = cip.astype(np.float64)
        return out


FACTORIES: dict[str, Callable[[ProcessCatalog], Policy]] = {
    "fixed_pi": UfBaseControl,
    "rule_based": UfRuleBased,
}
