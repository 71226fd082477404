"""The scoring client against the real Azure ML inference server serving packaging/azureml/score.py."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from app.agent_runtime.ensemble import EnsemblePolicy
from app.agent_runtime.observation import ObservationBuilder
from app.agent_runtime.package import verify_package
from app.cloud.errors import (
    ScoringAuthError,
    ScoringBadResponse,
    ScoringCircuitOpen,
    ScoringConfigError,
    ScoringError,
    ScoringModelError,
    ScoringNotFound,
    ScoringRateLimited,
    ScoringTimeout,
    ScoringVersionMismatch,
)
from app.cloud.scoring import BreakerState, CircuitBreaker, CloudScore, ScoringClient
from app.concurrency import LoopThread
from app.domain import Quality
from tests.cloud.conftest import (
    ACTIONS,
    DEPLOYMENT,
    SCORING_KEY,
    ScoringServer,
    Signer,
    typical_obs,
)

ACTION_TAGS = tuple(a[0] for a in ACTIONS)
KEY_REF = "env:INTELWATT_TEST_SCORING_KEY"


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def cloud_loop() -> Iterator[LoopThread]:
    loop = LoopThread("cloud")
    loop.start()
    yield loop
    loop.stop()


ClientFactory = Callable[..., ScoringClient]


@pytest.fixture
def make_client(
    cloud_loop: LoopThread, scoring_server: ScoringServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ClientFactory]:
    monkeypatch.setenv("INTELWATT_TEST_SCORING_KEY", SCORING_KEY)
    made: list[ScoringClient] = []

    def make(fault: str | None = None, **kw: Any) -> ScoringClient:
        options: dict[str, Any] = dict(
            url=scoring_server.url,
            key_ref=KEY_REF,
            deployment=DEPLOYMENT,
            process="ro",
            expected_version=scoring_server.version,
            action_tags=ACTION_TAGS,
        )
        options.update(kw)
        if fault is not None:
            options["extra_headers"] = {"x-intelwatt-fault": fault}
        client = ScoringClient(cloud_loop, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def fails_with(
    client: ScoringClient, kind: type[ScoringError], budget: float = 3.0
) -> ScoringError:
    future = client.score(typical_obs(), budget)
    with pytest.raises(kind) as info:
        future.result(timeout=budget + 2.0)  # the budget bounds the answer, not the test
    return info.value


def test_cloud_action_equals_the_local_onnx_action(
    make_client: ClientFactory, scoring_server: ScoringServer, signer: Signer
) -> None:
    package = verify_package(scoring_server.package, signer.trust)
    local = EnsemblePolicy.from_package(package)
    builder = ObservationBuilder(package.manifest)
    client = make_client()
    for shift in (-1.0, 0.0, 0.7):
        obs = typical_obs(shift)
        expected = local.act(builder.build({t: (v, Quality.GOOD) for t, v in obs.items()}))
        answer = client.score(obs, 5.0).result(timeout=10)
        assert isinstance(answer, CloudScore) and answer.cloud_sourced
        assert [answer.action[t] for t in ACTION_TAGS] == expected.action.tolist()
        assert answer.confidence == pytest.approx(1.0 - float(expected.uncertainty or 0.0))
        assert answer.policy_version == scoring_server.version
        assert answer.deployment == DEPLOYMENT
        assert answer.latency_s >= 0.0
        assert answer.age_s(answer.requested_at + 7.0) == pytest.approx(7.0)
    assert client.breaker.state is BreakerState.CLOSED
    assert np.all(np.isfinite(expected.action))


def test_a_wrong_key_is_refused_and_opens_the_breaker_at_once(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INTELWATT_TEST_SCORING_KEY", "stale-key")
    client = make_client()
    error = fails_with(client, ScoringAuthError)
    assert error.status == 401 and "stale-key" not in str(error)
    assert client.breaker.state is BreakerState.OPEN
    fails_with(client, ScoringCircuitOpen)


def test_a_rotated_key_is_reread_once_after_401(make_client: ClientFactory) -> None:
    keys = iter(["old-key", SCORING_KEY])
    client = make_client(resolve_key=lambda ref: next(keys))
    answer = client.score(typical_obs(), 5.0).result(timeout=10)
    assert answer.attempts == 2


def test_wrong_url_and_wrong_deployment_are_not_found(
    make_client: ClientFactory, scoring_server: ScoringServer
) -> None:
    fails_with(make_client(url=scoring_server.base + "/scor"), ScoringNotFound)
    fails_with(make_client(deployment="green"), ScoringNotFound)


@pytest.mark.parametrize("fault", ["error", "model_error"])
def test_model_failures_are_model_errors_without_retry(
    make_client: ClientFactory, fault: str
) -> None:
    error = fails_with(make_client(fault), ScoringModelError)
    assert error.status == (500 if fault == "error" else 424) and not error.retryable


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        ("garbage", ScoringBadResponse),
        ("nan_action", ScoringBadResponse),
        ("wrong_version", ScoringVersionMismatch),
    ],
)
def test_unusable_200_answers_are_refused(
    make_client: ClientFactory, fault: str, kind: type[ScoringError]
) -> None:
    assert fails_with(make_client(fault), kind).status == 200


def test_rate_limiting_is_retried_within_the_budget(make_client: ClientFactory) -> None:
    error = fails_with(make_client("rate_limited"), ScoringRateLimited, budget=0.6)
    assert error.retryable


def test_a_stalled_server_times_out_within_the_budget(make_client: ClientFactory) -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/score"
        error = fails_with(make_client(url=url), ScoringTimeout, budget=0.5)
    assert isinstance(error, TimeoutError)


def test_a_slow_model_times_out_within_the_budget(make_client: ClientFactory) -> None:
    fails_with(make_client("sleep:1.0"), ScoringTimeout, budget=0.4)


def test_the_breaker_opens_after_repeated_failures_and_recovers_with_a_probe(
    make_client: ClientFactory, scoring_server: ScoringServer
) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, reset_after_s=30.0, clock=clock)
    failing = make_client("error", breaker=breaker)
    fails_with(failing, ScoringModelError)
    assert breaker.state is BreakerState.CLOSED
    fails_with(failing, ScoringModelError)
    assert breaker.state is BreakerState.OPEN
    healthy = make_client(breaker=breaker)
    fails_with(healthy, ScoringCircuitOpen)  # no request while open
    clock.t += 30.0
    assert breaker.state is BreakerState.HALF_OPEN
    fails_with(failing, ScoringModelError)  # the probe fails: open again
    assert breaker.state is BreakerState.OPEN
    clock.t += 30.0
    assert healthy.score(typical_obs(), 5.0).result(timeout=10).action
    assert breaker.state is BreakerState.CLOSED


def test_bad_observations_never_leave_the_console(make_client: ClientFactory) -> None:
    client = make_client()
    obs = typical_obs() | {"feed_pressure_bar": float("nan")}
    with pytest.raises(ScoringConfigError, match="feed_pressure_bar"):
        client.score(obs, 2.0).result(timeout=5)
    assert "test-endpoint-key" not in repr(client)
