"""One ONNX policy: an ONNX Runtime session tuned for tiny MLPs, checked against its manifest.

The graph takes the raw engineering-unit observation (1 × n_obs, float32) and returns the
engineering-unit action (1 × n_act); normalisation, clipping and unscaling are inside the graph
(conventions.md, "Agent package"). A session belongs to one thread (the agent worker).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from app.agent_runtime.errors import ObservationRefused, PolicyGraphInvalid, PolicyRuntimeError
from app.agent_runtime.manifest import POLICY_FILE, ManifestFields

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]

_ACTION_OUTPUT = "action"
_F32_MAX = float(np.finfo(np.float32).max)
_F32_MAX_SQUARED = _F32_MAX * _F32_MAX


def _session(model: bytes, name: str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # One thread, no inter-op pool: for a 64x64 MLP thread hand-offs cost more than the maths.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise PolicyGraphInvalid(name, f"not a loadable ONNX model: {_first_line(exc)}") from exc


def _dim_ok(dim: object, expected: int) -> bool:
    """A declared dimension matches if it is ``expected`` or symbolic (checked by the dry run)."""
    return dim == expected or dim is None or isinstance(dim, str)


class OnnxPolicy:
    """An ONNX policy whose input and output match a manifest's observation and action spec.

    Build it with :meth:`from_bytes`; call :meth:`act` from one thread only.
    """

    __slots__ = ("_input", "_output", "_session", "action_tags", "name", "observation_tags")

    def __init__(
        self,
        session: Any,
        input_name: str,
        output_name: str,
        observation_tags: Sequence[str],
        action_tags: Sequence[str],
        name: str,
    ) -> None:
        self._session = session
        self._input = input_name
        self._output = output_name
        self.observation_tags = tuple(observation_tags)
        self.action_tags = tuple(action_tags)
        self.name = name

    @property
    def n_obs(self) -> int:
        """Length of the observation vector."""
        return len(self.observation_tags)

    @property
    def n_act(self) -> int:
        """Length of the action vector."""
        return len(self.action_tags)

    @classmethod
    def from_bytes(
        cls, model: bytes, manifest: ManifestFields, *, name: str = POLICY_FILE
    ) -> OnnxPolicy:
        """Open ``model`` and check it against ``manifest``.

        The graph must have one float32 input of shape 1 × n_obs and a float32 output (named
        ``action``, or the first output) of shape 1 × n_act. A dry run on the training-mean
        observation confirms the shapes and that the action is finite.

        Args:
            model: The ONNX file's bytes.
            manifest: The package manifest whose spec the graph must match.
            name: The file's path in the package, used in error messages.

        Raises:
            PolicyGraphInvalid: The bytes are not a loadable ONNX model, or its inputs/outputs do
                not match the manifest.
        """
        session = _session(model, name)
        n_obs, n_act = len(manifest.observations), len(manifest.actions)
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1:
            raise PolicyGraphInvalid(
                name, f"expected 1 input (the observation), found {len(inputs)}"
            )
        (inp,) = inputs
        if inp.type != "tensor(float)":
            raise PolicyGraphInvalid(name, f"input {inp.name!r} is {inp.type}, expected float32")
        shape = list(inp.shape)
        if len(shape) != 2 or not _dim_ok(shape[0], 1) or not _dim_ok(shape[1], n_obs):
            raise PolicyGraphInvalid(
                name,
                f"input {inp.name!r} has shape {shape}, but the manifest lists {n_obs} "
                f"observations (expected [1, {n_obs}])",
            )
        if not outputs:
            raise PolicyGraphInvalid(name, "the graph has no output")
        out = next((o for o in outputs if o.name == _ACTION_OUTPUT), outputs[0])
        if out.type != "tensor(float)":
            raise PolicyGraphInvalid(name, f"output {out.name!r} is {out.type}, expected float32")
        out_shape = list(out.shape)
        if len(out_shape) != 2 or not _dim_ok(out_shape[1], n_act):
            raise PolicyGraphInvalid(
                name,
                f"output {out.name!r} has shape {out_shape}, but the manifest lists {n_act} "
                f"actions (expected [1, {n_act}])",
            )
        policy = cls(
            session, inp.name, out.name, manifest.observation_tags, manifest.action_tags, name
        )
        probe = np.asarray(manifest.normalisation.mean, dtype=np.float32).reshape(1, n_obs)
        try:
            result = policy._session.run([out.name], {inp.name: probe})[0]
        except Exception as exc:
            raise PolicyGraphInvalid(
                name, f"dry run with a 1 x {n_obs} observation failed: {_first_line(exc)}"
            ) from exc
        if np.shape(result) != (1, n_act):
            raise PolicyGraphInvalid(
                name, f"dry run returned shape {np.shape(result)}, expected (1, {n_act})"
            )
        if not np.isfinite(result).all():
            raise PolicyGraphInvalid(name, "returns a non-finite action for the training mean")
        return policy

    def prepare(self, obs: npt.ArrayLike) -> Float32Array:
        """Check ``obs`` and return it as a new 1 × n_obs float32 array.

        Raises:
            ObservationRefused: Wrong shape, or a value that is NaN, infinite or beyond float32's
                range (named by tag), before any inference.
        """
        x = np.asarray(obs, dtype=np.float64)
        if x.size != self.n_obs or x.ndim > 2 or (x.ndim == 2 and x.shape[0] != 1):
            raise ObservationRefused(
                {"observation": f"shape {x.shape}, the policy expects ({self.n_obs},)"}
            )
        flat = x.reshape(self.n_obs)
        # One dot product instead of isfinite().all() (3x cheaper): it is NaN or too large
        # exactly when some value is non-finite or might not fit in float32.
        if not flat.dot(flat) <= _F32_MAX_SQUARED:
            self._check_values(flat)
        out = np.empty((1, self.n_obs), dtype=np.float32)
        out[0] = flat
        return out

    def _check_values(self, flat: FloatArray) -> None:
        problems: dict[str, str] = {}
        for i in np.flatnonzero(~np.isfinite(flat) | (np.abs(flat) > _F32_MAX)):
            v = float(flat[i])
            problems[self.observation_tags[i]] = (
                f"not finite ({v})" if not math.isfinite(v) else f"{v:g} is beyond float32 range"
            )
        if problems:
            raise ObservationRefused(problems)

    def infer(self, x: Float32Array) -> FloatArray:
        """Run the graph on an observation already checked by :meth:`prepare`.

        Raises:
            PolicyRuntimeError: ONNX Runtime failed, or the action is not finite.
        """
        try:
            out = self._session.run([self._output], {self._input: x})[0]
        except Exception as exc:
            raise PolicyRuntimeError(
                f"{self.name}: ONNX Runtime failed: {_first_line(exc)}"
            ) from exc
        action: FloatArray = np.asarray(out, dtype=np.float64).reshape(-1)
        if action.shape != (self.n_act,) or (
            not action.dot(action) < math.inf and not np.isfinite(action).all()
        ):
            raise PolicyRuntimeError(
                f"{self.name}: returned {action.tolist()} for actions {list(self.action_tags)}"
            )
        return action

    def act(self, obs: npt.ArrayLike) -> FloatArray:
        """The action for one observation (manifest order, engineering units).

        Args:
            obs: n_obs values (or 1 × n_obs) in manifest order.

        Returns:
            n_act action values in manifest order, float64.

        Raises:
            ObservationRefused: Wrong shape or NaN/infinity in ``obs``.
            PolicyRuntimeError: ONNX Runtime failed, or the action is not finite.
        """
        return self.infer(self.prepare(obs))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = ["FloatArray", "OnnxPolicy"]
