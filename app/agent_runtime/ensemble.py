"""The main policy plus its ensemble members: one action and how much the members disagree.

The action always comes from the main policy (``policy.onnx``). The uncertainty is the spread
(max − min) of the main policy's and every member's action, divided by the action's range in the
manifest, taking the worst action: 0 means all agree, 1 means they span the whole range.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.agent_runtime.errors import PolicyGraphInvalid
from app.agent_runtime.manifest import POLICY_FILE, ManifestFields
from app.agent_runtime.onnx_policy import FloatArray, OnnxPolicy
from app.agent_runtime.package import VerifiedPackage


@dataclass(frozen=True, slots=True)
class EnsembleAction:
    """Result of one ensemble step.

    Attributes:
        action: The main policy's action, manifest order, engineering units.
        uncertainty: Worst per-action spread normalised by the action range (0 = members agree);
            ``None`` when the package has no ensemble members.
        spread: Normalised spread of each action; ``None`` without members.
        member_actions: Actions of the main policy (row 0) and each member, (1 + K) × n_act.
    """

    action: FloatArray
    uncertainty: float | None
    spread: FloatArray | None
    member_actions: FloatArray


class EnsemblePolicy:
    """The main policy and its members, run on the same observation."""

    __slots__ = ("_range", "members", "policy")

    def __init__(
        self,
        policy: OnnxPolicy,
        members: Sequence[OnnxPolicy],
        action_low: npt.ArrayLike,
        action_high: npt.ArrayLike,
    ) -> None:
        """Combine ``policy`` and ``members`` whose actions span ``action_low`` … ``action_high``.

        Raises:
            ValueError: Members whose spec differs from the main policy's, or an empty range.
        """
        low = np.asarray(action_low, dtype=np.float64).reshape(-1)
        high = np.asarray(action_high, dtype=np.float64).reshape(-1)
        if low.shape != (policy.n_act,) or high.shape != (policy.n_act,):
            raise ValueError(f"action range must have {policy.n_act} entries per bound")
        if not np.all(high > low):
            raise ValueError("every action_high must exceed its action_low")
        for m in members:
            if (m.observation_tags, m.action_tags) != (policy.observation_tags, policy.action_tags):
                raise ValueError(f"member {m.name} has a different observation/action spec")
        self.policy = policy
        self.members = tuple(members)
        self._range = high - low

    @classmethod
    def from_manifest(
        cls, manifest: ManifestFields, policy: bytes, members: Sequence[tuple[str, bytes]] = ()
    ) -> EnsemblePolicy:
        """Open the main policy and members (name, bytes) and check them against ``manifest``.

        Raises:
            PolicyGraphInvalid: An ONNX file is unloadable or does not fit the manifest.
        """
        main = OnnxPolicy.from_bytes(policy, manifest, name=POLICY_FILE)
        opened = [OnnxPolicy.from_bytes(data, manifest, name=name) for name, data in members]
        low = [a.low for a in manifest.actions]
        high = [a.high for a in manifest.actions]
        return cls(main, opened, low, high)

    @classmethod
    def from_package(cls, package: VerifiedPackage) -> EnsemblePolicy:
        """Open the ONNX files of a verified package.

        Raises:
            PolicyGraphInvalid: An ONNX file is unloadable or does not fit the manifest.
        """
        try:
            return cls.from_manifest(
                package.manifest, package.policy, list(package.ensemble.items())
            )
        except ValueError as exc:
            raise PolicyGraphInvalid(str(package.source), str(exc)) from None

    def act(self, obs: npt.ArrayLike) -> EnsembleAction:
        """Run the main policy and every member on ``obs``.

        Raises:
            ObservationRefused: Wrong shape or NaN/infinity in ``obs``.
            PolicyRuntimeError: A session failed or returned a non-finite action.
        """
        x = self.policy.prepare(obs)
        action = self.policy.infer(x)
        if not self.members:
            return EnsembleAction(action, None, None, action.reshape(1, -1))
        rows = np.empty((1 + len(self.members), action.size), dtype=np.float64)
        rows[0] = action
        for i, member in enumerate(self.members, start=1):
            rows[i] = member.infer(x)
        spread = (rows.max(axis=0) - rows.min(axis=0)) / self._range
        return EnsembleAction(action, float(spread.max()), spread, rows)


__all__ = ["EnsembleAction", "EnsemblePolicy"]
