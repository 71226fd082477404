"""The simulated PLC's OPC UA front end (asyncua server).

One namespace (``urn:intelwatt:plant``), one object ``Plant`` under Objects, one Double variable per
catalogue tag with the string node id of ``app.plant.plc_map.standard_map`` (``<process>.<tag>``).
Only writable tags are ``set_writable()``. Client writes pass the PLC's checks before they reach the
address space: out-of-limit or non-finite values are refused with ``BadOutOfRange``, writes in local
mode or under write inhibit with ``BadInvalidState``; the previous value stays.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.common.callback import CallbackType
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.address_space import AttributeService
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes

from app.plant.faults import status_code_value
from app.plant.opcua_security import PLANT_APPLICATION_URI, PasswordUserManager, ensure_certificate
from app.plant.plc import PlcCore, Refusal, WriteRefused
from app.plant.plc_map import standard_map

log = logging.getLogger(__name__)

ENDPOINT_PATH = "/intelwatt/plant/"
STOP_TIMEOUT_S = 10.0
"""Longest wait for asyncua's graceful server stop before the listener is closed regardless."""
SECURITY_MODES = {
    "none": ua.SecurityPolicyType.NoSecurity,
    "sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "sign_encrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
}
"""Security settings by the names used on the command line and in ``OpcUaSecurity.modes``."""

_REFUSAL_STATUS = {
    Refusal.OUT_OF_RANGE: StatusCodes.BadOutOfRange,
    Refusal.NOT_A_NUMBER: StatusCodes.BadOutOfRange,
    Refusal.LOCAL_MODE: StatusCodes.BadInvalidState,
    Refusal.WRITE_INHIBIT: StatusCodes.BadInvalidState,
    Refusal.READ_ONLY: StatusCodes.BadNotWritable,
    Refusal.UNKNOWN_TAG: StatusCodes.BadNodeIdUnknown,
}


@dataclass(frozen=True, slots=True)
class OpcUaSecurity:
    """Security of the OPC UA endpoint.

    Attributes:
        modes: Endpoints offered, any of ``none``, ``sign``, ``sign_encrypt`` (Basic256Sha256).
        pki_dir: Folder for ``server-cert.der`` / ``server-key.pem`` (created if missing) and
            ``trusted/`` (client certificates accepted; all if the folder does not exist and no
            secure mode is offered). Required for secure modes.
        users: scrypt hash per user name (``app.plant.opcua_security.hash_password``).
        allow_anonymous: Accept sessions without a user identity.
    """

    modes: tuple[str, ...] = ("none",)
    pki_dir: Path | None = None
    users: Mapping[str, str] = field(default_factory=dict)
    allow_anonymous: bool = True

    def __post_init__(self) -> None:
        unknown = [m for m in self.modes if m not in SECURITY_MODES]
        if unknown or not self.modes:
            raise ValueError(
                f"OPC UA security modes must be among {', '.join(SECURITY_MODES)}, got {self.modes!r}"
            )
        if self.secure and self.pki_dir is None:
            raise ValueError("secure OPC UA modes need a pki folder (--pki DIR)")
        if not self.allow_anonymous and not self.users:
            raise ValueError("anonymous access is disabled but no users are defined")

    @property
    def secure(self) -> bool:
        """True if any signed or encrypted endpoint is offered."""
        return any(m != "none" for m in self.modes)

    @property
    def server_cert(self) -> Path:
        """The server certificate (DER)."""
        assert self.pki_dir is not None
        return self.pki_dir / "server-cert.der"

    @property
    def server_key(self) -> Path:
        """The server private key (PEM)."""
        assert self.pki_dir is not None
        return self.pki_dir / "server-key.pem"

    @property
    def trusted_dir(self) -> Path:
        """Folder of trusted client certificates."""
        assert self.pki_dir is not None
        return self.pki_dir / "trusted"


def _same(a: tuple[float, str | None], b: tuple[float, str | None] | None) -> bool:
    if b is None or a[1] != b[1]:
        return False
    return a[0] == b[0] or (a[0] != a[0] and b[0] != b[0])  # NaN equals NaN here


_ADMIN = User(role=UserRole.Admin)


class _PlcAttributeService(AttributeService):
    """Attribute service that lets the PLC check every client write of a tag value first."""

    def __init__(self, front: OpcUaFrontEnd) -> None:
        super().__init__(front.server.iserver.aspace)
        self._front = front

    async def write(self, params: ua.WriteParameters, user: User = _ADMIN) -> list[ua.StatusCode]:
        results: list[ua.StatusCode | None] = [None] * len(params.NodesToWrite)
        passed: list[int] = []
        nodes: list[ua.WriteValue] = []
        for i, wv in enumerate(params.NodesToWrite):
            try:
                wv = self._front.check_client_write(wv)
            except WriteRefused as exc:
                log.warning("OPC UA client %s: %s", user.name or "?", exc)
                results[i] = ua.StatusCode(ua.UInt32(_REFUSAL_STATUS[exc.reason]))
                continue
            except Exception:
                log.exception("OPC UA write of %s failed", wv.NodeId)
                results[i] = ua.StatusCode(ua.UInt32(StatusCodes.BadInternalError))
                continue
            passed.append(i)
            nodes.append(wv)
        if nodes:
            written = await super().write(ua.WriteParameters(NodesToWrite=nodes), user=user)
            for i, status in zip(passed, written, strict=True):
                results[i] = status
        return [
            r if r is not None else ua.StatusCode(ua.UInt32(StatusCodes.BadInternalError))
            for r in results
        ]


class OpcUaFrontEnd:
    """An asyncua server serving a ``PlcCore``'s tags.

    Args:
        core: The PLC.
        host: Interface to listen on.
        port: TCP port (a concrete port: the caller picks free ports).
        security: Endpoint security and users.
        clock: Monotonic wall clock used for write timestamps in the PLC.
    """

    def __init__(
        self,
        core: PlcCore,
        host: str,
        port: int,
        security: OpcUaSecurity,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.core = core
        self.host = host
        self.port = port
        self.security = security
        self._clock = clock
        self.server = Server(
            user_manager=PasswordUserManager(security.users, security.allow_anonymous)
        )
        self._node_ids: dict[str, ua.NodeId] = {}
        self._tags: dict[ua.NodeId, str] = {}
        self._published: dict[str, tuple[float, str | None]] = {}
        self._running = False

    @property
    def endpoint(self) -> str:
        """The endpoint URL clients connect to."""
        return f"opc.tcp://{self.host}:{self.port}{ENDPOINT_PATH}"

    @property
    def running(self) -> bool:
        """True while the server listens."""
        return self._running

    async def init(self) -> None:
        """Build the address space and security settings (≈ 1.3 s, once)."""
        srv = self.server
        await srv.init()
        srv.set_endpoint(self.endpoint)
        srv.set_server_name(f"intelwatt simulated PLC ({self.core.catalog.process})")
        await srv.set_application_uri(PLANT_APPLICATION_URI)
        sec = self.security
        srv.set_security_policy([SECURITY_MODES[m] for m in sec.modes])
        tokens: list[type] = [ua.UserNameIdentityToken]
        if sec.allow_anonymous:
            tokens.insert(0, ua.AnonymousIdentityToken)
        srv.set_identity_tokens(tokens)
        if sec.secure:
            ensure_certificate(sec.server_cert, sec.server_key, PLANT_APPLICATION_URI, server=True)
            await srv.load_certificate(str(sec.server_cert))
            await srv.load_private_key(str(sec.server_key))
            sec.trusted_dir.mkdir(parents=True, exist_ok=True)
            store = TrustStore([sec.trusted_dir], [])
            await store.load()
            srv.set_certificate_validator(
                CertificateValidator(
                    CertificateValidatorOptions.TRUSTED_VALIDATION
                    | CertificateValidatorOptions.PEER_CLIENT,
                    store,
                ).validate
            )
        idx = await srv.register_namespace(PLANT_APPLICATION_URI)
        plant = await srv.nodes.objects.add_object(
            ua.NodeId(ua.String("Plant"), ua.Int16(idx)), "Plant"
        )
        now = ua.DateTime.now(UTC)
        image = self.core.served()
        for tag, address in standard_map(self.core.catalog).items():
            node_id = ua.NodeId(ua.String(address.node_id.removeprefix("s=")), ua.Int16(idx))
            tdef = self.core.catalog.tag(tag)
            value, _ = image[tag]
            var = await plant.add_variable(node_id, tag, float(value), ua.VariantType.Double)
            await var.write_attribute(
                AttributeIds.Description,
                ua.DataValue(ua.Variant(ua.LocalizedText(f"{tdef.description} [{tdef.unit}]"))),
            )
            if address.writable:
                await var.set_writable()
            self._node_ids[tag] = node_id
            self._tags[node_id] = tag
        srv.iserver.attribute_service = _PlcAttributeService(self)
        srv.subscribe_server_callback(CallbackType.PreRead, self._delay)
        srv.subscribe_server_callback(CallbackType.PreWrite, self._delay)
        await self.publish(full=True, now=now)

    async def start(self) -> None:
        """Listen on the endpoint."""
        await self.server.start()
        self._running = True
        log.info(
            "OPC UA server listening on %s (security: %s)",
            self.endpoint,
            ", ".join(self.security.modes),
        )

    async def stop(self) -> None:
        """Close every session and stop listening.

        Client connections are aborted first: asyncua's graceful stop waits for each connection's
        closing task, which could hang for a minute on a client blocked in a publish request.
        """
        if self._running:
            self._running = False
            self.drop_connections()
            try:
                await asyncio.wait_for(self.server.stop(), timeout=STOP_TIMEOUT_S)
            except TimeoutError:
                log.warning(
                    "OPC UA server on %s did not stop within %.0f s; closing its listener",
                    self.endpoint,
                    STOP_TIMEOUT_S,
                )
                listener = getattr(self.server.bserver, "_server", None)
                if listener is not None:
                    listener.close()
            log.info("OPC UA server on %s stopped", self.endpoint)

    def drop_connections(self) -> int:
        """Close every client connection abruptly; returns how many were closed."""
        bserver = self.server.bserver
        if bserver is None:
            return 0
        clients = list(bserver.clients)
        for proto in clients:
            if proto.transport is not None:
                proto.transport.abort()
        log.warning("OPC UA: dropped %d client connection(s)", len(clients))
        return len(clients)

    def check_client_write(self, wv: ua.WriteValue) -> ua.WriteValue:
        """Let the PLC accept a client write of a tag value, stamped with the PLC's time.

        Writes to other nodes or attributes, and values of the wrong type, pass through unchanged
        so that asyncua answers them (BadUserAccessDenied, BadTypeMismatch, ...).

        Raises:
            WriteRefused: The PLC refused the value.
        """
        tag = self._tags.get(wv.NodeId)
        if tag is None or wv.AttributeId != AttributeIds.Value:
            return wv
        if not self.core.catalog.tag(tag).writable:
            return wv
        dv = wv.Value
        if dv is None or dv.Value is None or dv.Value.VariantType != ua.VariantType.Double:
            return wv
        if dv.StatusCode is not None and not dv.StatusCode.is_good():
            return wv
        value = float(dv.Value.Value)
        self.core.write(tag, value, self._clock())
        now = ua.DateTime.now(UTC)
        stamped = ua.DataValue(
            ua.Variant(value, ua.VariantType.Double), SourceTimestamp=now, ServerTimestamp=now
        )
        self._published[tag] = (value, None)
        return replace(wv, Value=stamped)

    async def publish(self, *, full: bool, now: ua.DateTime | None = None) -> None:
        """Write the PLC's served values into the address space.

        Args:
            full: Republish every tag that is not frozen (a scan happened: new source timestamps);
                otherwise only tags whose value or status changed.
            now: Source timestamp (default: the current UTC time).
        """
        stamp = now or ua.DateTime.now(UTC)
        faults = self.core.faults
        for tag, served in self.core.served().items():
            last = self._published.get(tag)
            unchanged = _same(served, last)
            if unchanged and (not full or faults.is_frozen(tag)):
                continue
            value, status = served
            if status is None:
                dv = ua.DataValue(
                    ua.Variant(float(value), ua.VariantType.Double),
                    SourceTimestamp=stamp,
                    ServerTimestamp=stamp,
                )
            else:
                dv = ua.DataValue(
                    ua.Variant(float(value), ua.VariantType.Double),
                    StatusCode=ua.StatusCode(ua.UInt32(status_code_value(status))),
                    SourceTimestamp=stamp,
                    ServerTimestamp=stamp,
                )
            await self.server.write_attribute_value(self._node_ids[tag], dv)
            self._published[tag] = served

    async def _delay(self, event: Any, dispatcher: Any) -> None:
        delay = self.core.faults.delay("opcua")
        if delay > 0:
            await asyncio.sleep(delay)
