"""Fuzzing with hypothesis: bad input gets a typed refusal, never an unsafe write or a crash.

Targets: sensor values and qualities through the whole agent step (real PolicyHost, safety
envelope, plant controller; a random MLP policy so actions span the whole action range), site TOML
files, agent packages, scoring endpoint responses and Modbus register contents. Sizes come from
``tests.reliability.sizes``; every test prints its case count.
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.agent_runtime.errors import PackageRefused
from app.agent_runtime.keys import TrustStore
from app.agent_runtime.package import verify_package, zip_package
from app.cloud.errors import ScoringError
from app.cloud.scoring import CloudScore, ScoringClient
from app.concurrency import LoopThread
from app.config import ConfigError, SiteConfig, parse_site
from app.domain import Mode, Quality
from app.drivers.base import value_quality
from app.drivers.codecs import CodecError, decode
from app.plant.catalog import RO_CATALOG
from app.plant.plc_map import REGISTER_WIDTH, TagAddress, standard_map
from tests.agent_runtime.conftest import PackageFactory
from tests.controllers.conftest import LIMITS, SANE, F, P, Rig
from tests.reliability.sizes import AGENT_STEP_CASES, FUZZ_CASES, TIMEOUT_S

pytestmark = pytest.mark.timeout(TIMEOUT_S)

ROOT = Path(__file__).resolve().parents[2]
DEMO_SITE = ROOT / "resources" / "sites" / "demo-ro.toml"
FUZZ = settings(max_examples=FUZZ_CASES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))  # fmt: skip


# --- sensor values and qualities through the agent step -----------------------------------------

OBSERVED = tuple(t.name for t in RO_CATALOG.observations) + tuple(SANE)
BAD_QUALITIES = [q for q in Quality if q is not Quality.GOOD]
HANDSHAKE = ("supervisory_active", "agent_in_control")


@st.composite
def plant_states(draw: st.DrawFn) -> tuple[dict[str, float], dict[str, Quality], bool]:
    """Values (in range) for every input, then 0-3 faults; returns (values, qualities, faulty)."""
    values: dict[str, float] = {}
    for name in OBSERVED:
        tdef = RO_CATALOG.tag(name)
        if name in SANE:
            values[name] = SANE[name]
        else:
            values[name] = draw(st.floats(tdef.low, tdef.high))
    qualities: dict[str, Quality] = {}
    faulty = False
    for _ in range(draw(st.sampled_from((0, 0, 1, 1, 2, 3)))):
        name = draw(st.sampled_from(OBSERVED))
        tdef = RO_CATALOG.tag(name)
        fault = draw(st.sampled_from(("quality", "nan", "inf", "range", "flag")))
        if fault == "quality":
            qualities[name] = draw(st.sampled_from(BAD_QUALITIES))
        elif fault == "nan":
            values[name] = math.nan
        elif fault == "inf":
            values[name] = draw(st.sampled_from((math.inf, -math.inf)))
        elif fault == "range":
            span = tdef.high - tdef.low
            values[name] = draw(
                st.sampled_from((tdef.low - 0.5 * span - 1, tdef.high + 0.5 * span + 1))
            )
        elif name in SANE and name not in HANDSHAKE:
            values[name] = 1.0 - SANE[name]  # an interlock flag flips (CIP, watchdog, local...)
        else:
            continue
        # Handshake echoes (supervisory_active, agent_in_control) are the PLC's business, not inputs
        # of a decision: a fault there must not block, and is not counted as a faulty input.
        faulty = faulty or name not in HANDSHAKE
    return values, qualities, faulty


@pytest.fixture
def fuzz_rig(
    tmp_path: Path, trust_store: TrustStore, make_package: PackageFactory
) -> Iterator[Rig]:
    rig = Rig(tmp_path, trust_store)
    rig.load(make_package(ensemble=(), version="ro-fuzz"))  # random MLP: actions across the range
    assert rig.run(rig.mode.request_mode(Mode.ADVISORY, rig.login("op"))).accepted
    yield rig
    rig.close()


@pytest.mark.slow
def test_random_sensor_data_through_the_agent_step_never_writes_unsafely(fuzz_rig: Rig) -> None:
    rig = fuzz_rig
    eng = rig.login("eng")
    counts = {"cases": 0, "faulty": 0, "writes": 0, "unsafe": 0, "automatic_steps": 0}

    @settings(max_examples=AGENT_STEP_CASES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(plant_states())
    def case(state: tuple[dict[str, float], dict[str, Quality], bool]) -> None:
        values, qualities, faulty = state
        counts["cases"] += 1
        counts["faulty"] += faulty
        # A fresh, good plant first, so AUTOMATIC can be (re-)entered after earlier demotions.
        rig.driver.faults.quality.clear()
        good = {n: (v if n in SANE else rig.driver.values[n]) for n, v in SANE.items()}
        rig.driver.set_values({**{n: rig.driver.values[n] for n in OBSERVED}, **good})
        for name in OBSERVED:
            if rig.driver._sample(name).quality is not Quality.GOOD:
                rig.driver.set_value(name, RO_CATALOG.tag(name).base_value or
                                     (RO_CATALOG.tag(name).low + RO_CATALOG.tag(name).high) / 2)  # fmt: skip
        if rig.mode.mode is not Mode.AUTOMATIC:
            rig.run(rig.mode.request_mode(Mode.AUTOMATIC, eng, confirm=True))
        if rig.mode.mode is not Mode.AUTOMATIC:
            return
        counts["automatic_steps"] += 1
        current = {P: rig.driver.values[P], F: rig.driver.values[F]}
        for name, value in values.items():
            rig.driver.set_value(name, value, qualities.get(name))
        before = len(rig.driver.writes)
        rig.step()
        new = [w for w in rig.driver.writes[before:] if w.tag in (P, F)]
        counts["writes"] += len(new)
        for w in new:
            lim = LIMITS[w.tag]
            unsafe = (
                faulty
                or not math.isfinite(w.value)
                or not lim.engineer_low <= w.value <= lim.engineer_high
                or abs(w.value - current[w.tag]) > (lim.max_move or math.inf) + 1e-9
            )
            counts["unsafe"] += unsafe
            assert not unsafe, (w, values, qualities)

    case()
    print(f"\nagent-step fuzz: {counts}")
    assert counts["unsafe"] == 0
    assert counts["writes"] > 0 and counts["faulty"] > 0  # both paths were exercised


# --- site TOML files ----------------------------------------------------------------------------

DEMO_LINES = DEMO_SITE.read_text().splitlines()
JUNK = st.one_of(
    st.text(max_size=12),
    st.sampled_from(['""', "-1", "1e309", "nan", "true", "[", "]", "{", "=", "[[x]]", "0x10",
                     '"env:X"', "9" * 40, "inf", "'", "\\u0000"]),
)  # fmt: skip


@st.composite
def mutated_sites(draw: st.DrawFn) -> str:
    lines = list(DEMO_LINES)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(("delete", "value", "dup", "junk", "truncate", "key")))
        if op == "delete":
            del lines[i]
        elif op == "value" and "=" in lines[i]:
            key = lines[i].split("=", 1)[0]
            lines[i] = f"{key}= {draw(JUNK)}"
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "junk":
            lines.insert(i, draw(JUNK))
        elif op == "truncate":
            lines[i] = lines[i][: draw(st.integers(0, max(0, len(lines[i]))))]
        elif op == "key" and "=" in lines[i]:
            lines[i] = (
                draw(st.from_regex(r"[a-z_]{1,12}", fullmatch=True))
                + " ="
                + lines[i].split("=", 1)[1]
            )
        if not lines:
            break
    return "\n".join(lines)


def test_mutated_site_files_give_a_site_or_a_config_error() -> None:
    counts = {"cases": 0, "valid": 0, "config_error": 0}
    problems: list[str] = []

    @FUZZ
    @given(mutated_sites())
    def case(text: str) -> None:
        counts["cases"] += 1
        try:
            site = parse_site(text, "fuzz.toml")
        except ConfigError as exc:
            counts["config_error"] += 1
            problems.append(str(exc))
            return
        assert isinstance(site, SiteConfig)
        counts["valid"] += 1

    case()
    print(f"\nsite TOML fuzz: {counts}")
    assert all(p.strip() for p in problems), "every ConfigError names its problem"
    assert counts["config_error"] > 0 and counts["valid"] > 0


# --- agent packages -----------------------------------------------------------------------------


@pytest.fixture
def package_zip(make_package: PackageFactory, tmp_path: Path) -> bytes:
    folder = make_package(version="ro-fuzz")
    return zip_package(folder, tmp_path / "pkg.zip").read_bytes()


def _mutate_zip(data: bytes, draw: Any) -> bytes:
    out = bytearray(data)
    op = draw(st.sampled_from(("flip", "truncate", "insert", "splice")))
    if op == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(out) - 1))
            out[i] ^= draw(st.integers(1, 255))
    elif op == "truncate":
        out = out[: draw(st.integers(0, len(out) - 1))]
    elif op == "insert":
        i = draw(st.integers(0, len(out)))
        out[i:i] = draw(st.binary(min_size=1, max_size=64))
    else:
        i, j = sorted((draw(st.integers(0, len(out))), draw(st.integers(0, len(out)))))
        out[i:j] = draw(st.binary(max_size=32))
    return bytes(out)


def _mutate_manifest(manifest: dict[str, Any], draw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(json.dumps(manifest))
    key = draw(st.sampled_from(sorted(doc)))
    doc[key] = draw(st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), st.text(max_size=8),
                              st.lists(st.integers(), max_size=3), st.just({})))  # fmt: skip
    return doc


def test_mutated_packages_are_refused_with_typed_errors(
    package_zip: bytes, make_package: PackageFactory, trust_store: TrustStore, tmp_path: Path
) -> None:
    folder = make_package(version="ro-fuzz-folder")
    manifest = json.loads((folder / "manifest.json").read_text())
    signature = (folder / "manifest.sig").read_bytes()
    target = tmp_path / "case.zip"
    counts: dict[str, int] = {"cases": 0, "accepted": 0}

    @FUZZ
    @given(st.data())
    def case(data: st.DataObject) -> None:
        counts["cases"] += 1
        kind = data.draw(st.sampled_from(("zip", "manifest", "signature")))
        case_dir = tmp_path / f"c{counts['cases']}"
        if kind == "zip":
            target.write_bytes(_mutate_zip(package_zip, data.draw))
            path = target
        else:
            import shutil

            shutil.copytree(folder, case_dir)
            path = case_dir
            if kind == "manifest":
                (case_dir / "manifest.json").write_text(
                    json.dumps(_mutate_manifest(manifest, data.draw))
                )
            else:
                (case_dir / "manifest.sig").write_bytes(_mutate_zip(signature, data.draw))
        try:
            verify_package(path, trust_store)
        except PackageRefused as exc:
            name = type(exc).__name__
            counts[name] = counts.get(name, 0) + 1
            return
        counts["accepted"] += 1  # e.g. a flip inside zip padding the format ignores

    case()
    print(f"\npackage fuzz: {counts}")
    assert counts["cases"] - counts["accepted"] > 0.9 * counts["cases"]


# --- scoring endpoint responses -----------------------------------------------------------------

GOOD_ANSWER = {"schema": 1, "policy_version": "ro-v1", "action": {P: 12.0, F: 40.0},
               "confidence": 0.9}  # fmt: skip
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def responses(draw: st.DrawFn) -> tuple[int, dict[str, str], bytes]:
    status = draw(
        st.sampled_from((200, 200, 200, 400, 401, 404, 408, 413, 424, 429, 500, 503, 302))
    )
    headers = draw(st.dictionaries(st.sampled_from(("retry-after", "x-ms-run-function-failed",
                                                    "ms-azureml-model-error-reason")),
                                   st.text(max_size=10), max_size=2))  # fmt: skip
    how = draw(st.sampled_from(("bytes", "json", "answer")))
    if how == "bytes":
        body = draw(st.binary(max_size=200))
    elif how == "json":
        body = json.dumps(draw(JSONISH)).encode()
    else:
        doc = dict(GOOD_ANSWER)
        key = draw(st.sampled_from([*sorted(doc), "request_id", "extra"]))
        doc[key] = draw(JSONISH)
        body = json.dumps(doc).encode()
    return status, headers, body


def test_random_endpoint_responses_give_a_score_or_a_typed_scoring_error() -> None:
    loop = LoopThread("fuzz-cloud")
    client = ScoringClient(loop, url="http://127.0.0.1:9/score", key_ref="k", deployment=None,
                           process="ro", resolve_key=lambda ref: "key")  # fmt: skip
    counts: dict[str, int] = {"cases": 0, "scored": 0}
    answer: list[tuple[int, dict[str, str], bytes]] = []

    async def post(body: bytes, request_id: str) -> tuple[int, dict[str, str], bytes]:
        return answer[0]

    client._post = post  # type: ignore[method-assign]

    @FUZZ
    @given(responses())
    def case(response: tuple[int, dict[str, str], bytes]) -> None:
        counts["cases"] += 1
        answer[:] = [response]
        client.breaker.record_success()  # fuzz the parser, not the breaker
        try:
            score = asyncio.run(client.score_async({P: 12.0, F: 40.0}, budget_s=0.05))
        except ScoringError as exc:
            name = type(exc).__name__
            counts[name] = counts.get(name, 0) + 1
            return
        assert isinstance(score, CloudScore)
        assert all(math.isfinite(v) for v in score.action.values())
        counts["scored"] += 1

    case()
    print(f"\nscoring-response fuzz: {counts}")
    assert counts["scored"] < counts["cases"]


# --- Modbus register contents -------------------------------------------------------------------

ADDRESSES = list(standard_map(RO_CATALOG).values())


@st.composite
def register_cases(draw: st.DrawFn) -> tuple[TagAddress, list[int]]:
    from dataclasses import replace

    addr = draw(st.sampled_from(ADDRESSES))
    addr = replace(
        addr,
        datatype=draw(st.sampled_from(sorted(REGISTER_WIDTH))),
        word_order=draw(st.sampled_from(("big", "little"))),
        byte_swap=draw(st.booleans()),
        scale=draw(st.sampled_from((1.0, 0.1, 0.01, 10.0))),
    )
    width = REGISTER_WIDTH[addr.datatype]
    count = draw(st.sampled_from((width, width, width, width - 1, width + 1)))
    regs = draw(st.lists(st.integers(0, 0xFFFF), min_size=max(0, count), max_size=max(0, count)))
    if draw(st.integers(0, 9)) == 0:
        regs = [*regs[:-1], draw(st.sampled_from((-1, 0x10000)))] if regs else [0x10000]
    if addr.datatype == "float32" and width == len(regs) and draw(st.booleans()):
        special = draw(st.sampled_from((math.nan, math.inf, -math.inf, 3e38)))
        hi, lo = struct.unpack(">HH", struct.pack(">f", special))
        regs = [hi, lo]
    return addr, regs


def test_random_register_contents_give_a_value_with_a_quality_or_a_codec_error() -> None:
    counts: dict[str, int] = {"cases": 0, "codec_error": 0}
    unnamed: list[str] = []

    @settings(max_examples=FUZZ_CASES * 5, deadline=None, derandomize=True, database=None)
    @given(register_cases())
    def case(c: tuple[TagAddress, list[int]]) -> None:
        addr, regs = c
        counts["cases"] += 1
        try:
            value = decode(regs, addr)
        except CodecError as exc:
            counts["codec_error"] += 1
            unnamed.extend([] if addr.tag in str(exc) else [str(exc)])
            return
        quality = value_quality(RO_CATALOG.tag(addr.tag), value)
        counts[quality.value] = counts.get(quality.value, 0) + 1
        if quality is Quality.GOOD:
            assert math.isfinite(value)

    case()
    print(f"\nModbus register fuzz: {counts}")
    assert unnamed == [], "a CodecError names its tag"
    assert counts["codec_error"] > 0 and counts.get("good", 0) > 0
