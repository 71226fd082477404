"""Client of the Azure ML online endpoint that serves the same agent as the console (the cloud fallback).

Contract (library-notes.md §4.3): ``POST /score`` with ``Authorization: Bearer <key>``, the
``azureml-model-deployment`` pin and an ``x-ms-client-request-id``::

    request : {"schema": 1, "process": "ro", "policy_version": "...", "request_id": "...",
               "obs_ts": "...Z", "obs": {"feed_pressure_bar": 55.1, ...}}
    response: {"schema": 1, "policy_version": "...", "action": {"feed_pressure_sp_bar": 55.6},
               "confidence": 0.93}

Everything runs on the cloud loop (aiohttp); :meth:`ScoringClient.score` may be called from any
thread and returns a ``concurrent.futures.Future``. The whole exchange, retries included, is bounded
by the caller's budget: past it the future fails with :class:`ScoringTimeout` (a ``TimeoutError``).

Status handling (library-notes.md §4.2): 200 → validated (schema, policy version, every action tag
finite); 401 → the key is re-read once from its secret store, then :class:`ScoringAuthError`; 404 →
:class:`ScoringNotFound`; 408, 429 and infrastructure 5xx → retried with backoff while the budget
allows; 413 → :class:`ScoringPayloadTooLarge`; 424 and the container's own errors (a local server's
500 with ``x-ms-run-function-failed``, 4xx) → :class:`ScoringModelError`, no retry. A circuit breaker
stops calling an endpoint that keeps failing and probes it again after a pause.

The key is never logged, never put in an exception and never part of ``repr``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from app.cloud.errors import (
    ScoringAuthError,
    ScoringBadResponse,
    ScoringCircuitOpen,
    ScoringConfigError,
    ScoringError,
    ScoringModelError,
    ScoringNotFound,
    ScoringPayloadTooLarge,
    ScoringRateLimited,
    ScoringServerError,
    ScoringTimeout,
    ScoringUnreachable,
    ScoringVersionMismatch,
)
from app.concurrency import LoopThread
from app.domain import utc_now
from app.secrets import SecretError, resolve_secret

log = logging.getLogger(__name__)

SCHEMA = 1
MAX_PAYLOAD_BYTES = 1_500_000
"""Azure ML's request and response size limit (1.5 MB)."""
_FIRST_BACKOFF_S = 0.05
_MIN_ATTEMPT_S = 0.05


class BreakerState(enum.StrEnum):
    """State of the circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Stops calling a failing endpoint; lets one probe through after ``reset_after_s``.

    Opens after ``failure_threshold`` consecutive failed requests, or at once on a failure that
    retrying cannot fix (authentication, wrong URL). While open, requests fail immediately with
    :class:`ScoringCircuitOpen`. After ``reset_after_s`` one request is let through (half-open): its
    success closes the breaker, its failure opens it again for another ``reset_after_s``.
    Used on the cloud loop only.

    Args:
        failure_threshold: Consecutive failures that open the breaker.
        reset_after_s: Pause before the half-open probe.
        clock: Monotonic clock.
    """

    def __init__(
        self,
        failure_threshold: int = 3,
        reset_after_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or not reset_after_s > 0:
            raise ValueError("failure_threshold must be ≥ 1 and reset_after_s > 0")
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False

    @property
    def state(self) -> BreakerState:
        """Current state (an open breaker whose pause is over reports ``HALF_OPEN``)."""
        if self._state is BreakerState.OPEN and self._pause_over():
            return BreakerState.HALF_OPEN
        return self._state

    def _pause_over(self) -> bool:
        return self._clock() - self._opened_at >= self.reset_after_s

    def allow(self) -> bool:
        """Whether a request may be sent now (claims the probe slot when half-open)."""
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN and self._pause_over():
            self._state = BreakerState.HALF_OPEN
        if self._state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        """A request succeeded: close the breaker."""
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._probe_in_flight = False

    def record_failure(self, *, hard: bool = False) -> None:
        """A request failed; ``hard`` failures open the breaker at once."""
        self._failures += 1
        self._probe_in_flight = False
        if (
            hard
            or self._state is BreakerState.HALF_OPEN
            or self._failures >= self.failure_threshold
        ):
            self._state = BreakerState.OPEN
            self._opened_at = self._clock()

    def retry_in_s(self) -> float:
        """Seconds until the next probe is allowed (0 when closed or half-open)."""
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self.reset_after_s - (self._clock() - self._opened_at))


@dataclass(frozen=True, slots=True)
class CloudScore:
    """An action computed by the cloud endpoint; always cloud-sourced.

    Field names match ``app.agent_runtime.fallback.CloudAnswer`` so the controller can hand it on.

    Attributes:
        action: Setpoint per action tag, engineering units (finite, validated).
        policy_version: Agent version that computed it (checked against the expected version).
        deployment: Deployment that answered (response header, else the pinned name).
        requested_at: Monotonic time the request was started.
        received_at: Monotonic time the answer was validated.
        confidence: 1 − ensemble spread as reported by the endpoint, if any.
        request_id: ``x-ms-client-request-id`` of the exchange.
        obs_ts: Time stamp of the observation it answers.
        attempts: HTTP attempts made (retries included).
        cloud_sourced: Always True: never mistake this for a local agent's action.
    """

    action: Mapping[str, float]
    policy_version: str
    deployment: str
    requested_at: float
    received_at: float
    confidence: float | None
    request_id: str
    obs_ts: datetime
    attempts: int = 1
    cloud_sourced: bool = field(default=True, init=False)

    def age_s(self, now_monotonic: float) -> float:
        """Seconds since the request was started (the observation's age at the cloud)."""
        return max(0.0, now_monotonic - self.requested_at)

    @property
    def latency_s(self) -> float:
        """Round trip, retries included."""
        return self.received_at - self.requested_at


def _reject_constant(token: str) -> Any:
    raise ValueError(f"non-finite number {token}")


def _finite_number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


class ScoringClient:
    """Calls the scoring endpoint on the cloud loop.

    Args:
        loop: The cloud loop thread (started by the caller); the HTTP session lives on it.
        url: Full ``.../score`` URL.
        key_ref: Secret reference of the endpoint key (``env:NAME`` or ``keyring:service/user``).
        deployment: Deployment to pin (``azureml-model-deployment``); ``None`` sends no pin.
        process: Process name sent in each request.
        expected_version: Policy version every answer must carry (``None``: not checked; set it
            with :meth:`set_expected_version` when the active agent changes).
        action_tags: Action tags every answer must contain, exactly; empty: not checked.
        breaker: Circuit breaker (default: 3 failures, 30 s pause).
        extra_headers: Further request headers (e.g. a gateway's own).
        resolve_key: Turns ``key_ref`` into the key (default: ``app.secrets.resolve_secret``).
        clock: Monotonic clock.
    """

    def __init__(
        self,
        loop: LoopThread,
        *,
        url: str,
        key_ref: str,
        deployment: str | None,
        process: str,
        expected_version: str | None = None,
        action_tags: Sequence[str] = (),
        breaker: CircuitBreaker | None = None,
        extra_headers: Mapping[str, str] | None = None,
        resolve_key: Callable[[str], str] = resolve_secret,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ScoringConfigError(f"scoring URL must start with http:// or https://: {url!r}")
        self._loop = loop
        self.url = url
        self._key_ref = key_ref
        self.deployment = deployment
        self.process = process
        self._expected_version = expected_version
        self.action_tags = tuple(action_tags)
        self.breaker = breaker or CircuitBreaker(clock=clock)
        self._extra_headers = dict(extra_headers or {})
        self._resolve_key = resolve_key
        self._clock = clock
        self._key: str | None = None
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return (
            f"ScoringClient(url={self.url!r}, deployment={self.deployment!r}, "
            f"key_ref={self._key_ref!r})"
        )

    @property
    def expected_version(self) -> str | None:
        """Policy version answers must carry."""
        return self._expected_version

    def set_expected_version(self, version: str | None) -> None:
        """Change the expected policy version (e.g. after a promotion); thread-safe."""
        self._expected_version = version

    # --- any thread -------------------------------------------------------------------------

    def score(
        self, obs: Mapping[str, float], budget_s: float, *, obs_ts: datetime | None = None
    ) -> concurrent.futures.Future[CloudScore]:
        """Request an action for ``obs`` from any thread.

        The future holds a :class:`CloudScore` or fails with a :class:`ScoringError` subclass, at
        the latest when ``budget_s`` has passed (:class:`ScoringTimeout`).
        """
        return self._loop.submit(self.score_async(dict(obs), budget_s, obs_ts=obs_ts))

    def close(self, timeout: float = 5.0) -> None:
        """Close the HTTP session (from any thread other than the cloud loop's)."""
        if self._loop.running:
            self._loop.run(self.aclose(), timeout)

    # --- cloud loop -------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the HTTP session (on the cloud loop)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def score_async(
        self, obs: Mapping[str, float], budget_s: float, *, obs_ts: datetime | None = None
    ) -> CloudScore:
        """Request an action for ``obs``, on the cloud loop; see :meth:`score`."""
        started = self._clock()
        if not budget_s > 0:
            raise ScoringTimeout(f"no time left (budget {budget_s:g} s)")
        if not self.breaker.allow():
            raise ScoringCircuitOpen(
                f"{self.breaker.failure_threshold} failures in a row; next probe in "
                f"{self.breaker.retry_in_s():.1f} s"
            )
        request_id = str(uuid.uuid4())
        obs_ts = obs_ts or utc_now()
        try:
            async with asyncio.timeout(budget_s):
                result = await self._exchange(obs, obs_ts, request_id, started, budget_s)
        except TimeoutError:
            self.breaker.record_failure()
            raise ScoringTimeout(f"no valid answer within {budget_s:g} s") from None
        except ScoringError as exc:
            self.breaker.record_failure(hard=isinstance(exc, ScoringAuthError | ScoringNotFound))
            log.warning("scoring request %s failed: %s", request_id, exc.reason)
            raise
        except BaseException:
            self.breaker.record_failure()
            raise
        self.breaker.record_success()
        return result

    async def _exchange(
        self,
        obs: Mapping[str, float],
        obs_ts: datetime,
        request_id: str,
        started: float,
        budget_s: float,
    ) -> CloudScore:
        body = self._request_body(obs, obs_ts, request_id)
        key_refreshed = False
        attempt = 0
        backoff = _FIRST_BACKOFF_S
        while True:
            attempt += 1
            try:
                status, headers, payload = await self._post(body, request_id)
                if status == 401 and not key_refreshed and self._refresh_key():
                    key_refreshed = True
                    continue
                doc = self._check_status(status, headers, payload)
                return self._validate(doc, headers, request_id, obs_ts, started, attempt)
            except ScoringError as exc:
                remaining = budget_s - (self._clock() - started)
                wait = backoff
                if isinstance(exc, ScoringRateLimited) and exc.retry_after_s is not None:
                    wait = max(wait, exc.retry_after_s)
                if not exc.retryable or remaining < wait + _MIN_ATTEMPT_S:
                    raise
                await asyncio.sleep(wait)
                backoff *= 2

    def _request_body(self, obs: Mapping[str, float], obs_ts: datetime, request_id: str) -> bytes:
        bad = [tag for tag, value in obs.items() if _finite_number(value) is None]
        if bad:
            raise ScoringConfigError(f"observation has non-finite values for {', '.join(bad)}")
        doc = {
            "schema": SCHEMA,
            "process": self.process,
            "policy_version": self._expected_version,
            "request_id": request_id,
            "obs_ts": obs_ts.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "obs": {tag: float(value) for tag, value in obs.items()},
        }
        body = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
        if len(body) > MAX_PAYLOAD_BYTES:
            raise ScoringPayloadTooLarge(f"request is {len(body)} bytes (> {MAX_PAYLOAD_BYTES})")
        return body

    def _current_key(self) -> str:
        if self._key is None:
            try:
                self._key = self._resolve_key(self._key_ref)
            except SecretError as exc:
                raise ScoringConfigError(str(exc)) from None
        return self._key

    def _refresh_key(self) -> bool:
        """Re-read the key once after a 401; True if it changed (worth one more attempt)."""
        old = self._key
        self._key = None
        try:
            return self._current_key() != old
        except ScoringConfigError:
            return False

    async def _post(self, body: bytes, request_id: str) -> tuple[int, Mapping[str, str], bytes]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {
            **self._extra_headers,
            "Content-Type": "application/json",
            "Authorization": f"Bearer {self._current_key()}",
            "x-ms-client-request-id": request_id,
        }
        if self.deployment is not None:
            headers["azureml-model-deployment"] = self.deployment
        try:
            async with self._session.post(self.url, data=body, headers=headers) as response:
                payload = await response.content.read(MAX_PAYLOAD_BYTES + 1)
                return response.status, dict(response.headers), payload
        except aiohttp.ClientError as exc:
            raise ScoringUnreachable(f"{type(exc).__name__}: {exc}") from None

    @staticmethod
    def _check_status(status: int, headers: Mapping[str, str], payload: bytes) -> Any:
        detail = payload[:200].decode("utf-8", "replace").strip() or "(empty body)"
        if status == 200:
            if len(payload) > MAX_PAYLOAD_BYTES:
                raise ScoringBadResponse(f"answer over {MAX_PAYLOAD_BYTES} bytes", status=status)
            try:
                return json.loads(payload, parse_constant=_reject_constant)
            except (UnicodeDecodeError, ValueError) as exc:
                raise ScoringBadResponse(f"answer is not JSON ({exc})", status=status) from None
        if status == 401:
            raise ScoringAuthError("the endpoint key was refused", status=status)
        if status == 404:
            raise ScoringNotFound(f"wrong URL or deployment: {detail}", status=status)
        if status == 408:
            raise ScoringTimeout("the endpoint's request timeout expired", status=status)
        if status == 413:
            raise ScoringPayloadTooLarge(detail, status=status)
        if status == 429:
            raise ScoringRateLimited.from_headers(headers, status)
        container_failed = str(headers.get("x-ms-run-function-failed", "")).lower() == "true"
        if status == 424 or container_failed or 400 <= status < 500:
            reason = headers.get("ms-azureml-model-error-reason", "")
            raise ScoringModelError(f"{detail} {reason}".strip(), status=status)
        if status >= 500:
            raise ScoringServerError(detail, status=status)
        raise ScoringBadResponse(f"unexpected status: {detail}", status=status)

    def _validate(
        self,
        doc: Any,
        headers: Mapping[str, str],
        request_id: str,
        obs_ts: datetime,
        started: float,
        attempts: int,
    ) -> CloudScore:
        def bad(why: str) -> ScoringBadResponse:
            return ScoringBadResponse(why, status=200)

        if not isinstance(doc, dict):
            raise bad("answer is not a JSON object")
        if doc.get("schema") != SCHEMA:
            raise bad(f"answer schema {doc.get('schema')!r}, expected {SCHEMA}")
        version = doc.get("policy_version")
        if not isinstance(version, str) or not version:
            raise bad("answer has no policy_version")
        if self._expected_version is not None and version != self._expected_version:
            raise ScoringVersionMismatch(
                f"answer from {version!r}, expected {self._expected_version!r}", status=200
            )
        echoed = doc.get("request_id")
        if echoed is not None and echoed != request_id:
            raise bad(f"answer is for request {echoed!r}, not {request_id!r}")
        raw_action = doc.get("action")
        if not isinstance(raw_action, dict) or not raw_action:
            raise bad("answer has no action object")
        action: dict[str, float] = {}
        for tag, value in raw_action.items():
            number = _finite_number(value)
            if number is None:
                raise bad(f"action {tag!r} is not a finite number: {value!r}")
            action[str(tag)] = number
        if self.action_tags and set(action) != set(self.action_tags):
            raise bad(f"action tags {sorted(action)} differ from {sorted(self.action_tags)}")
        confidence = doc.get("confidence")
        if confidence is not None:
            confidence = _finite_number(confidence)
            if confidence is None or not 0.0 <= confidence <= 1.0:
                raise bad(f"confidence {doc.get('confidence')!r} is not in [0, 1]")
        return CloudScore(
            action=action,
            policy_version=version,
            deployment=str(headers.get("azureml-model-deployment") or self.deployment or ""),
            requested_at=started,
            received_at=self._clock(),
            confidence=confidence,
            request_id=request_id,
            obs_ts=obs_ts,
            attempts=attempts,
        )


__all__ = [
    "MAX_PAYLOAD_BYTES",
    "BreakerState",
    "CircuitBreaker",
    "CloudScore",
    "ScoringClient",
]
