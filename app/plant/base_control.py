"""The PLC's base control: PI loops and schedules that hold each process at its design point.

The simulated PLC (``app.plant.plc``) runs these policies whenever no supervisor is in control, at
its scan time (≈ 1 s); ``intelwatt eval`` runs them as the ``fixed_pi`` baseline at the agent
period (minutes to an hour). Both must work, so every loop is written for any ``dt_s``:

- The PI is in velocity form on top of the setpoint *readback*: the output continues from the
  value the plant actually applies, so rate limits, clamps or an operator change cannot wind it
  up, and a hand-back from a supervisor is bumpless.
- Its integral step per scan is ``β·e/g`` with ``β = β_max·(1 − exp(−dt/τ_c))`` and ``g`` the
  loop's current static gain estimated from measurements: a first-order closed loop with time
  constant ``τ_c`` at small ``dt``, a damped (``β_max < 1``) fixed-point step on the quasi-static
  plant map at large ``dt``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from app.domain import TagRole
from app.kpi import TDS_PER_CONDUCTIVITY
from app.plant.catalog import COMMON_TAGS, ProcessCatalog
from app.plant.models.base import FloatArray, Policy

_COMMON = {t.name for t in COMMON_TAGS}


def controlled_tags(catalog: ProcessCatalog) -> tuple[str, ...]:
    """The process setpoints and commands a policy writes (heartbeats and handshake excluded)."""
    return tuple(
        t.name for t in catalog.by_role(TagRole.SETPOINT, TagRole.COMMAND) if t.name not in _COMMON
    )


def setpoint_limits(catalog: ProcessCatalog, name: str) -> tuple[float, float]:
    """The range the PLC accepts for a writable tag (its PLC limits, else its physical range)."""
    tag = catalog.tag(name)
    low = tag.plc_low if tag.plc_low is not None else tag.low
    high = tag.plc_high if tag.plc_high is not None else tag.high
    return float(low), float(high)


def readback(measurements: Mapping[str, FloatArray], name: str, fallback: FloatArray) -> FloatArray:
    """The setpoint readback ``name`` where it is present and finite, else ``fallback``."""
    value = measurements.get(name)
    if value is None:
        return fallback
    arr = np.asarray(value, dtype=np.float64)
    return np.where(np.isfinite(arr), arr, fallback)


class VectorPI:
    """PI controllers for ``n`` plants in velocity form with clamping (see the module docstring).

    Args:
        low: Lowest output.
        high: Highest output.
        tau_s: Closed-loop time constant at small ``dt``.
        beta_max: Largest fraction of the estimated correction applied in one step (< 1 damps
            gain-estimate errors at large ``dt``).
        kp: Proportional kick on the error change, as a fraction of the static correction; it
            fades as ``τ/(τ + dt)`` so that long steps stay a damped fixed-point iteration.
        max_rate_per_s: Largest output change per second (the PLC's setpoint ramp), if any.
    """

    def __init__(
        self,
        low: float,
        high: float,
        tau_s: float,
        beta_max: float = 0.7,
        kp: float = 0.3,
        max_rate_per_s: float | None = None,
    ) -> None:
        if not low < high:
            raise ValueError(f"PI output range is empty: [{low}, {high}]")
        if tau_s <= 0 or not 0 < beta_max <= 1 or kp < 0:
            raise ValueError(f"bad PI tuning: tau_s={tau_s}, beta_max={beta_max}, kp={kp}")
        self.low, self.high = low, high
        self.tau_s, self.beta_max, self.kp = tau_s, beta_max, kp
        self.max_rate_per_s = max_rate_per_s
        self.u = np.zeros(0)
        self._e_prev = np.zeros(0)
        self._ready = np.zeros(0, dtype=bool)

    def reset(self, n: int) -> None:
        """Forget outputs and errors; the next ``update`` starts from the readback."""
        self.u = np.zeros(n)
        self._e_prev = np.zeros(n)
        self._ready = np.zeros(n, dtype=bool)

    def update(
        self,
        error: FloatArray,
        gain: FloatArray,
        current: FloatArray,
        dt_s: float,
        hold: np.ndarray | None = None,
    ) -> FloatArray:
        """One control step.

        Args:
            error: Setpoint minus measurement, per plant.
            gain: Estimated static gain d(measurement)/d(output) (sign included), per plant.
            current: Output value the plant applies now (setpoint readback).
            dt_s: Step length.
            hold: Plants whose loop is frozen this step (cleaning, stopped): output unchanged.

        Returns:
            The new output per plant, within [low, high].
        """
        e = np.asarray(error, dtype=np.float64)
        g = np.asarray(gain, dtype=np.float64)
        cur = np.clip(np.asarray(current, dtype=np.float64), self.low, self.high)
        frozen = ~np.isfinite(e) | ~np.isfinite(g) | (g == 0.0)
        if hold is not None:
            frozen |= np.asarray(hold, dtype=bool)
        e = np.where(frozen, 0.0, e)
        g = np.where(frozen, 1.0, g)
        beta = self.beta_max * -np.expm1(-dt_s / self.tau_s)
        kick = self.kp * self.tau_s / (self.tau_s + dt_s)
        de = np.where(self._ready & ~frozen, e - self._e_prev, 0.0)
        step = (beta * e + kick * de) / g
        if self.max_rate_per_s is not None:
            lim = self.max_rate_per_s * dt_s
            step = np.clip(step, -lim, lim)
        self.u = np.clip(cur + step, self.low, self.high)
        self._e_prev = np.where(frozen, self._e_prev, e)
        self._ready |= ~frozen
        return self.u


@dataclass(frozen=True, slots=True)
class RoDesign:
    """Design point the RO base control holds.

    Attributes:
        permeate_flow_m3h: Permeate flow target (HP pump pressure loop).
        recovery: Recovery target, 0–1 (feed flow / concentrate loop).
        cip_interval_h: Calendar clean-in-place interval in operating hours.
        tau_s: Closed-loop time constant of both loops at small ``dt``.
    """

    permeate_flow_m3h: float = 20.0
    recovery: float = 0.5
    cip_interval_h: float = 720.0
    tau_s: float = 60.0

    def __post_init__(self) -> None:
        if self.permeate_flow_m3h <= 0 or not 0 < self.recovery < 1 or self.cip_interval_h <= 0:
            raise ValueError(f"bad RO design point: {self}")


class RoBaseControl(Policy):
    """RO: feed-pressure PI on permeate flow, feed-flow PI on recovery, calendar CIP.

    Pressure loop gain: permeate flow is proportional to net driving pressure, so
    ``dQp/dP ≈ Qp / (P_feed − P_permeate − π)``, with π estimated from the feed conductivity and
    the concentration factor. Recovery loop gain: ``dY/dQf = −Y/Qf`` at constant permeate flow.

    Args:
        catalog: The RO catalogue (setpoint limits and ramps).
        design: Targets and calendar.
        osmotic_bar_per_uscm: Osmotic pressure per µS/cm of feed conductivity used for the gain
            estimate (≈ 0.78 bar per g/L, at the console's conductivity-to-TDS factor
            ``app.kpi.TDS_PER_CONDUCTIVITY``, as the model and the live KPIs use).
    """

    name = "fixed_pi"

    def __init__(
        self,
        catalog: ProcessCatalog,
        design: RoDesign | None = None,
        osmotic_bar_per_uscm: float = 0.78 * TDS_PER_CONDUCTIVITY / 1000.0,
    ) -> None:
        self.catalog = catalog
        self.design = design or RoDesign()
        self._osm = osmotic_bar_per_uscm
        p_lo, p_hi = setpoint_limits(catalog, "feed_pressure_sp_bar")
        q_lo, q_hi = setpoint_limits(catalog, "feed_flow_sp_m3h")
        self._p_default = float(catalog.tag("feed_pressure_sp_bar").base_value or p_lo)
        self._q_default = float(catalog.tag("feed_flow_sp_m3h").base_value or q_lo)
        tau = self.design.tau_s
        self.pressure_pi = VectorPI(p_lo, p_hi, tau)
        self.flow_pi = VectorPI(q_lo, q_hi, tau)
        self._n = 0

    def reset(self, n: int, rng: np.random.Generator) -> None:
        """Forget loop state for ``n`` plants."""
        self._n = n
        self.pressure_pi.reset(n)
        self.flow_pi.reset(n)

    def act(
        self, measurements: Mapping[str, FloatArray], t_s: float, dt_s: float
    ) -> dict[str, FloatArray]:
        """Setpoints and the CIP request for the next ``dt_s`` seconds."""
        m = measurements
        n = self._n or np.asarray(m["permeate_flow_m3h"]).size
        if self._n != n:
            self.reset(n, np.random.default_rng(0))
        qp = np.asarray(m["permeate_flow_m3h"], dtype=np.float64)
        qf = np.asarray(m["feed_flow_m3h"], dtype=np.float64)
        p_feed = np.asarray(m["feed_pressure_bar"], dtype=np.float64)
        p_perm = np.asarray(m.get("permeate_pressure_bar", np.zeros(n)), dtype=np.float64)
        cip = np.asarray(m.get("cip_active", np.zeros(n)), dtype=np.float64) >= 0.5
        running = ~cip & (qf > 0.05 * self._q_default) & (qp > 0.0)
        recovery = np.where(running, qp / np.maximum(qf, 1e-9), np.nan)

        # Mean feed-concentrate osmotic pressure: feed value times the log-mean concentration factor.
        ec = np.asarray(m.get("feed_conductivity_uscm", np.zeros(n)), dtype=np.float64)
        y = np.clip(np.nan_to_num(recovery, nan=self.design.recovery), 0.0, 0.95)
        cf_mean = np.where(y > 1e-6, -np.log1p(-y) / np.maximum(y, 1e-6), 1.0)
        ndp = p_feed - p_perm - self._osm * ec * cf_mean
        gain_p = qp / np.maximum(ndp, 0.1 * np.maximum(p_feed, 1.0))
        gain_p = np.clip(gain_p, 0.05, 50.0)
        gain_q = -np.maximum(y, 0.05) / np.maximum(qf, 1.0)

        p_now = readback(m, "feed_pressure_sp_bar", np.full(n, self._p_default))
        q_now = readback(m, "feed_flow_sp_m3h", np.full(n, self._q_default))
        p_sp = self.pressure_pi.update(
            self.design.permeate_flow_m3h - qp, gain_p, p_now, dt_s, hold=~running
        )
        q_sp = self.flow_pi.update(
            self.design.recovery - recovery, gain_q, q_now, dt_s, hold=~running
        )
        hours = np.asarray(m.get("hours_since_cip_h", np.zeros(n)), dtype=np.float64)
        cip_due = ~cip & (hours >= self.design.cip_interval_h)
        return {
            "feed_pressure_sp_bar": p_sp,
            "feed_flow_sp_m3h": q_sp,
            "cip_request": cip_due.astype(np.float64),
        }


@dataclass(frozen=True, slots=True)
class HsbroDesign:
    """Settings of the HSBRO base control.

    Attributes:
        supply_lpm: Fixed supply flow (sets the flux).
        recirc_lpm: Fixed recirculation flow.
        purge_factor: Fixed purge factor.
        target_brine_ratio: Recovered concentrate aimed at, × bath concentration (spec 1.0–1.2).
        bath_tds_gl: Bath concentration the concentrate is returned to.
        pressure_cap_bar: Highest batch-end supply pressure the switch point may lead to.
        backoff_bar: In batch, supply flow drops to its minimum above this pressure.
        tank_reserve_l: Feed the tank must still hold after the next cycle (trip at 250 L).
        brine_gl_per_ms_cm: Concentrate TDS per mS/cm of loop conductivity at the switch (1.48
            at 8 L/min supply on the pilot model; 1.40 at 12, 1.52 at 5 L/min).
    """

    supply_lpm: float = 8.0
    recirc_lpm: float = 48.0
    purge_factor: float = 0.703
    target_brine_ratio: float = 1.1
    bath_tds_gl: float = 76.0
    pressure_cap_bar: float = 110.0
    backoff_bar: float = 113.0
    tank_reserve_l: float = 400.0
    brine_gl_per_ms_cm: float = 1.48


class HsbroBaseControl(Policy):
    """HSBRO: fixed flows and the pressure-cap phase-switch rule (Karimi 2024 [P10], rl_hrro [P1]).

    The semi-batch phase ends when the loop is concentrated enough for the batch phase to finish
    at the target concentrate (``target_brine_ratio`` × bath), or earlier if the batch-end pressure
    would exceed ``pressure_cap_bar``. The concentrate follows the loop conductivity at the switch
    (``brine_gl_per_ms_cm``, the pilot's batch concentration gain at the design flows); the
    batch-end pressure is predicted run-to-run: each cycle's peak supply pressure in batch and the
    pressure at its switch update the gain used for the next switch.

    The batch is ended (``end_process_cmd``) once the feed tank cannot supply another cycle of the
    size just seen (salt balance before the first), and the semi-batch phase is cut short if the
    tank would otherwise run into its low-level trip.
    """

    name = "fixed_pi"

    def __init__(self, catalog: ProcessCatalog, design: HsbroDesign | None = None) -> None:
        from app.plant.models.hsbro import conductivity_uscm

        self.catalog = catalog
        self.design = design or HsbroDesign()
        self._ec1 = float(conductivity_uscm(np.asarray(1.0)))
        self._ec_exp = float(np.log(conductivity_uscm(np.asarray(np.e)) / self._ec1))
        self._n = 0
        self._state: dict[str, FloatArray] = {}

    def tds_gl(self, ec_uscm: FloatArray) -> FloatArray:
        """NaCl-equivalent TDS from conductivity (inverse of the model's conductivity law)."""
        return np.asarray((np.maximum(ec_uscm, 0.0) / self._ec1) ** (1.0 / self._ec_exp))

    def reset(self, n: int, rng: np.random.Generator) -> None:
        """Start with the pilot's typical gains and no cycle history."""
        self._n = n
        self._state = {
            # Batch-end pressure above the switch pressure per bar of switch pressure (≈ 2.9).
            "p_gain": np.full(n, 2.9),
            "p_offset": np.full(n, -19.0),
            "p_switch": np.full(n, np.nan),
            "p_peak": np.zeros(n),
            "prev_phase": np.full(n, -1.0),
            "tank_at_start": np.full(n, np.nan),
            "cycle_feed_l": np.full(n, np.nan),
        }

    def act(
        self, measurements: Mapping[str, FloatArray], t_s: float, dt_s: float
    ) -> dict[str, FloatArray]:
        """Flows, purge factor and the phase commands for the next ``dt_s`` seconds."""
        m = measurements
        n = np.asarray(m["phase"]).size
        if self._n != n:
            self.reset(n, np.random.default_rng(0))
        d, s = self.design, self._state
        phase = np.asarray(m["phase"], dtype=np.float64)
        ec = np.asarray(m["loop_conductivity_uscm"], dtype=np.float64)
        p_sup = np.asarray(m["supply_pressure_bar"], dtype=np.float64)
        tank = np.asarray(m["feed_tank_volume_l"], dtype=np.float64)
        feed_ec = np.asarray(m["feed_conductivity_uscm"], dtype=np.float64)
        semi, batch, purge = phase == 0, phase == 1, phase == 2

        # Cycle bookkeeping: peak pressure in batch; learn the pressure gain when the purge starts.
        s["p_peak"] = np.where(batch, np.maximum(s["p_peak"], p_sup), s["p_peak"])
        ended = purge & (s["prev_phase"] == 1) & np.isfinite(s["p_switch"])
        if ended.any():
            rise = (s["p_peak"] - s["p_offset"]) / np.maximum(s["p_switch"], 1.0)
            s["p_gain"] = np.where(ended, np.clip(rise, 1.5, 5.0), s["p_gain"])
        started = semi & (s["prev_phase"] != 0)
        used = s["tank_at_start"] - tank
        s["cycle_feed_l"] = np.where(
            started & np.isfinite(used) & (used > 0), used, s["cycle_feed_l"]
        )
        s["tank_at_start"] = np.where(started, tank, s["tank_at_start"])
        s["p_peak"] = np.where(started, 0.0, s["p_peak"])

        # The switch rule.
        by_quality = ec >= 1000.0 * d.target_brine_ratio * d.bath_tds_gl / d.brine_gl_per_ms_cm
        by_pressure = s["p_offset"] + s["p_gain"] * p_sup >= d.pressure_cap_bar
        # Feed the batch and purge still draw: the work exchanger plus the purge, with margin.
        low_tank = tank - 250.0 < 150.0
        switch = semi & (by_quality | by_pressure | low_tank)
        s["p_switch"] = np.where(switch, p_sup, s["p_switch"])

        # End the batch of rinse water when another cycle would not fit in the tank.
        c_feed = np.maximum(self.tds_gl(feed_ec), 0.1)
        brine_salt_g = 30.6 * d.target_brine_ratio * d.bath_tds_gl
        salt_estimate = brine_salt_g / c_feed + 100.0
        need = np.where(np.isfinite(s["cycle_feed_l"]), s["cycle_feed_l"], salt_estimate)
        # After this cycle the tank holds about tank_at_start − need; the next one needs 1.1 × need.
        left_after_next = s["tank_at_start"] - 2.1 * need
        end = ((left_after_next < d.tank_reserve_l) | low_tank) & (phase < 3)
        s["prev_phase"] = phase.copy()

        supply = np.where(batch & (p_sup >= d.backoff_bar), 4.0, d.supply_lpm)
        return {
            "supply_flow_sp_lpm": supply,
            "recirc_flow_sp_lpm": np.full(n, d.recirc_lpm),
            "purge_factor_sp": np.full(n, d.purge_factor),
            "end_semibatch_cmd": switch.astype(np.float64),
            "end_process_cmd": end.astype(np.float64),
        }


@dataclass(frozen=True, slots=True)
class UfDesign:
    """Settings of the UF base control.

    Attributes:
        flux_lmh: Fixed filtrate flux.
        filtration_min: Fixed filtration time between backwashes (the PLC sequences them).
        bw_duration_s: Fixed backwash duration.
        ceb_interval_h: Chemically enhanced backwash every this many hours.
        cip_interval_h: Calendar clean-in-place interval.
    """

    flux_lmh: float = 60.0
    filtration_min: float = 40.0
    bw_duration_s: float = 30.0
    ceb_interval_h: float = 24.0
    cip_interval_h: float = 720.0


class UfBaseControl(Policy):
    """UF: fixed flux, fixed filtration/backwash schedule, CEB every 24 h, calendar CIP [P23–P25]."""

    name = "fixed_pi"

    def __init__(self, catalog: ProcessCatalog, design: UfDesign | None = None) -> None:
        self.catalog = catalog
        self.design = design or UfDesign()

    def reset(self, n: int, rng: np.random.Generator) -> None:
        """Nothing to forget: the schedule runs on the PLC's own counters."""

    def act(
        self, measurements: Mapping[str, FloatArray], t_s: float, dt_s: float
    ) -> dict[str, FloatArray]:
        """Fixed setpoints; CEB and CIP requests when their intervals have elapsed."""
        d = self.design
        n = np.asarray(measurements["tmp_bar"]).size
        state = np.asarray(measurements["uf_state"], dtype=np.float64)
        since_ceb = np.asarray(measurements["hours_since_ceb_h"], dtype=np.float64)
        since_cip = np.asarray(measurements["hours_since_cip_h"], dtype=np.float64)
        cip = (since_cip >= d.cip_interval_h) & (state != 3)
        ceb = ~cip & (since_ceb >= d.ceb_interval_h) & (state <= 1)
        return {
            "flux_sp_lmh": np.full(n, d.flux_lmh),
            "filtration_time_sp_min": np.full(n, d.filtration_min),
            "bw_duration_sp_s": np.full(n, d.bw_duration_s),
            "bw_request": np.zeros(n),
            "ceb_request": ceb.astype(np.float64),
            "cip_request": cip.astype(np.float64),
        }


def base_control(process: str, catalog: ProcessCatalog) -> Policy:
    """The PLC base control of ``process``.

    Raises:
        KeyError: No base control for ``process`` (the message lists the known ones).
    """
    controls: dict[str, type[Policy]] = {
        "ro": RoBaseControl,
        "hsbro": HsbroBaseControl,
        "uf": UfBaseControl,
    }
    if process not in controls:
        raise KeyError(
            f"no base control for process {process!r}; known: {', '.join(sorted(controls))}"
        )
    return controls[process](catalog)  # type: ignore[call-arg]
