"""OPC UA driver: asyncua client with auto-reconnect, security, batched I/O and subscriptions.

Status codes and source timestamps become ``Sample.quality`` and ``Sample.source_ts``. Data-change
notifications are requested with the ``StatusValueTimestamp`` trigger, so a PLC that refreshes an
unchanged value still proves it is alive; a notification older than the last value delivered for
its tag (a replay after a reconnect) is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.client.ua_client import UaClientState
from asyncua.common.subscription import DataChangeEvent, StatusChangeEvent, Subscription
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from app.config import OpcUaConnection
from app.domain import ConnectionState, Quality, Sample, Setpoint, TagId, utc_now
from app.drivers.base import (
    AuthFailedError,
    ConnectionLostError,
    DriverConfigError,
    SampleCallback,
    StateCallback,
    StateTracker,
    TagMap,
    TagWriteResult,
    WriteResult,
    WriteStatus,
    failed_samples,
    readback_matches,
    value_quality,
)
from app.plant.catalog import TagDef
from app.plant.plc_map import TagAddress
from app.secrets import SecretError, resolve_secret

log = logging.getLogger(__name__)

_AUTH_CODES = frozenset(
    {
        StatusCodes.BadUserAccessDenied,
        StatusCodes.BadIdentityTokenInvalid,
        StatusCodes.BadIdentityTokenRejected,
        StatusCodes.BadCertificateUntrusted,
        StatusCodes.BadCertificateInvalid,
        StatusCodes.BadCertificateRevoked,
        StatusCodes.BadCertificateTimeInvalid,
        StatusCodes.BadCertificateUriInvalid,
        StatusCodes.BadCertificateHostNameInvalid,
        StatusCodes.BadCertificateUseNotAllowed,
        StatusCodes.BadSecurityChecksFailed,
        StatusCodes.BadSecurityPolicyRejected,
        StatusCodes.BadSecurityModeRejected,
        StatusCodes.BadUserSignatureInvalid,
        StatusCodes.BadApplicationSignatureInvalid,
        StatusCodes.BadNoValidCertificates,
    }
)
_CONFIG_CODES = frozenset(
    {
        StatusCodes.BadNodeIdUnknown,
        StatusCodes.BadNodeIdInvalid,
        StatusCodes.BadAttributeIdInvalid,
        StatusCodes.BadTypeMismatch,
        StatusCodes.BadNotReadable,
        StatusCodes.BadDataTypeIdUnknown,
    }
)
_COMM_CODES = frozenset(
    {
        StatusCodes.BadCommunicationError,
        StatusCodes.BadNotConnected,
        StatusCodes.BadServerNotConnected,
        StatusCodes.BadNoCommunication,
        StatusCodes.BadConnectionClosed,
        StatusCodes.BadTimeout,
        StatusCodes.BadShutdown,
        StatusCodes.BadServerHalted,
        StatusCodes.BadWaitingForInitialData,
    }
)
_INTEGER_VARIANTS = frozenset(
    {
        ua.VariantType.SByte,
        ua.VariantType.Byte,
        ua.VariantType.Int16,
        ua.VariantType.UInt16,
        ua.VariantType.Int32,
        ua.VariantType.UInt32,
        ua.VariantType.Int64,
        ua.VariantType.UInt64,
    }
)
_TRANSPORT_ERRORS = (ConnectionError, OSError, TimeoutError, asyncio.TimeoutError, UaError)
RENEW_RETRY_FIRST_S = 0.5
"""First wait before retrying a failed subscription renewal (doubles up to the max)."""
RENEW_RETRY_MAX_S = 10.0


CERT_EXPIRY_WARNING_DAYS = 30.0
"""A certificate expiring within this many days raises the ``plc.certificate`` alarm."""


def certificate_expiry_warnings(
    certificates: Mapping[str, Path | str],
    *,
    within_days: float = CERT_EXPIRY_WARNING_DAYS,
    now: datetime | None = None,
) -> list[str]:
    """One warning per certificate (DER or PEM) that expired or expires within ``within_days``.

    Args:
        certificates: Role (``client``, ``server``) -> certificate file.
        within_days: Warning horizon.
        now: Current time (default: now, UTC).

    Raises:
        DriverConfigError: A file is not an X.509 certificate.
    """
    from cryptography import x509

    now = now or datetime.now(UTC)
    out: list[str] = []
    for role, path in certificates.items():
        data = Path(path).read_bytes()
        try:
            cert = (
                x509.load_pem_x509_certificate(data)
                if data.lstrip().startswith(b"-----")
                else x509.load_der_x509_certificate(data)
            )
        except ValueError as exc:
            raise DriverConfigError(
                f"{role} certificate {str(path)!r} is unreadable: {exc}"
            ) from None
        end = cert.not_valid_after_utc
        left_days = (end - now).total_seconds() / 86400
        if left_days <= 0:
            out.append(f"{role} certificate {path} expired on {end:%Y-%m-%d}")
        elif left_days <= within_days:
            out.append(
                f"{role} certificate {path} expires in {left_days:.0f} days ({end:%Y-%m-%d})"
            )
    return out


def _aware(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def status_quality(code: ua.StatusCode) -> Quality:
    """Map a non-good OPC UA status code to a sample quality."""
    if code.is_uncertain():
        return Quality.UNCERTAIN
    if code.value in _CONFIG_CODES:
        return Quality.CONFIG_ERROR
    if code.value in _COMM_CODES:
        return Quality.COMM_FAILURE
    return Quality.BAD


def _write_tolerance(vtype: ua.VariantType | None, value: float) -> float:
    if vtype in _INTEGER_VARIANTS or vtype is ua.VariantType.Boolean:
        return 0.5
    if vtype is ua.VariantType.Float:
        return 2.4e-7 * max(1.0, abs(value))
    return 1e-9 * max(1.0, abs(value))


def _to_variant(value: float, vtype: ua.VariantType | None) -> ua.Variant:
    if vtype is ua.VariantType.Boolean:
        return ua.Variant(bool(round(value)), vtype)
    if vtype in _INTEGER_VARIANTS:
        return ua.Variant(round(value), vtype)
    if vtype is ua.VariantType.Float:
        return ua.Variant(float(value), vtype)
    return ua.Variant(float(value), ua.VariantType.Double)


class _OpcUaSubscription:
    """A data-change subscription; implements ``SubscriptionHandle``."""

    def __init__(
        self, driver: OpcUaDriver, tags: tuple[TagId, ...], on_sample: SampleCallback
    ) -> None:
        self._driver = driver
        self._tags = tags
        self.on_sample = on_sample
        self.subscription: Subscription | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def tags(self) -> tuple[TagId, ...]:
        return self._tags

    def deliver(self, sample: Sample) -> None:
        try:
            self.on_sample(sample)
        except Exception:
            log.exception("sample callback %r failed on %s", self.on_sample, sample.tag)

    async def close(self) -> None:
        await self._driver._drop_subscription(self)


class OpcUaDriver:
    """PLC driver for an OPC UA server (see ``app.drivers.base.PlcDriver``).

    Args:
        connection: Endpoint, namespace, timeouts and security from the site file.
        definitions: Catalogue definitions of the served tags (ranges for quality checks).
        addresses: Address of every tag; ``node_id`` of the form ``s=...``/``i=...`` lives in the
            ``connection.namespace_uri`` namespace, ``ns=...;...`` is taken as written.
        secret_resolver: Turns the password reference into the password.
        watchdog_interval_s: How often the client probes the server to notice a dead connection.
    """

    def __init__(
        self,
        connection: OpcUaConnection,
        definitions: Sequence[TagDef],
        addresses: Mapping[TagId, TagAddress],
        *,
        secret_resolver: Callable[[str], str] = resolve_secret,
        watchdog_interval_s: float = 0.5,
        name: str = "opcua",
    ) -> None:
        self.connection = connection
        self.tag_map = TagMap(definitions, addresses)
        self._resolve_secret = secret_resolver
        self._watchdog_interval_s = watchdog_interval_s
        self._state = StateTracker(name)
        self._name = name
        self._client: Client | None = None
        self._nodes: dict[TagId, ua.NodeId] = {}
        self._tag_by_node: dict[ua.NodeId, TagId] = {}
        self._variant: dict[TagId, ua.VariantType] = {}
        self._config_errors: dict[TagId, str] = {}
        self._last_source_ts: dict[TagId, datetime] = {}
        self._subscriptions: list[_OpcUaSubscription] = []
        self._state_task: asyncio.Task[None] | None = None
        self._renewing: asyncio.Task[None] | None = None
        self.certificate_warnings: tuple[str, ...] = ()
        """Certificates that expired or expire soon, checked at every ``connect``."""
        self._closing = False

    # --- state ------------------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """Current connection state."""
        return self._state.state

    def add_state_listener(self, callback: StateCallback) -> Callable[[], None]:
        """Call ``callback(state, detail)`` on every state change; returns an unsubscribe function."""
        return self._state.add_listener(callback)

    @property
    def config_errors(self) -> dict[TagId, str]:
        """Tags whose address the server does not know, with the reason."""
        return dict(self._config_errors)

    # --- connect / close --------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect, authenticate, resolve the namespace and check every node id.

        Raises:
            AuthFailedError: Wrong user/password or certificate refused (state AUTH_FAILED).
            DriverConfigError: Bad node id syntax, unknown namespace, missing secret.
            ConnectionLostError: Server unreachable (state DISCONNECTED).
        """
        if self._client is not None:
            await self.close()
        self._closing = False
        self._state.set(ConnectionState.CONNECTING, self.connection.endpoint)
        client = Client(
            self.connection.endpoint,
            timeout=self.connection.timeout_s,
            watchdog_intervall=self._watchdog_interval_s,
        )
        client.application_uri = self.connection.application_uri
        try:
            await self._configure_security(client)
            await client.connect(
                auto_reconnect=True,
                reconnect_max_delay=self.connection.reconnect_max_delay_s,
                reconnect_request_timeout=self.connection.timeout_s,
            )
        except (SecretError, DriverConfigError) as exc:
            self._state.set(ConnectionState.CONFIG_ERROR, str(exc))
            await self._discard(client)
            raise DriverConfigError(f"{self._name}: {exc}") from None
        except UaStatusCodeError as exc:
            await self._discard(client)
            if exc.code in _AUTH_CODES:
                detail = f"server refused the credentials or certificate: {type(exc).__name__}"
                self._state.set(ConnectionState.AUTH_FAILED, detail)
                raise AuthFailedError(
                    f"{self._name} {self.connection.endpoint}: {detail}"
                ) from None
            self._state.set(ConnectionState.DISCONNECTED, type(exc).__name__)
            raise ConnectionLostError(
                f"{self._name} {self.connection.endpoint}: {type(exc).__name__}"
            ) from None
        except _TRANSPORT_ERRORS as exc:
            await self._discard(client)
            detail = f"cannot connect: {type(exc).__name__}: {exc}"
            self._state.set(ConnectionState.DISCONNECTED, detail)
            raise ConnectionLostError(
                f"{self._name} {self.connection.endpoint}: {detail}"
            ) from None
        self._client = client
        try:
            await self._resolve_nodes(client)
        except DriverConfigError as exc:
            self._state.set(ConnectionState.CONFIG_ERROR, str(exc))
            self._client = None
            await self._discard(client)
            raise
        except _TRANSPORT_ERRORS as exc:
            self._client = None
            await self._discard(client)
            self._state.set(ConnectionState.DISCONNECTED, f"{type(exc).__name__}: {exc}")
            raise ConnectionLostError(f"{self._name}: lost during start-up: {exc}") from None
        self._state_task = asyncio.get_running_loop().create_task(
            self._watch_client_state(client), name=f"{self._name}-state"
        )
        self._state.set(ConnectionState.CONNECTED, self.connection.endpoint)

    async def _configure_security(self, client: Client) -> None:
        security = self.connection.security
        if security.username is not None:
            assert security.password is not None  # guaranteed by OpcUaSecurity validation
            client.set_user(security.username)
            client.set_password(self._resolve_secret(security.password))
        if security.policy == "None":
            return
        assert security.certificate is not None
        assert security.private_key is not None
        for path in (security.certificate, security.private_key, security.server_certificate):
            if path is not None and not await asyncio.to_thread(Path(path).is_file):
                raise DriverConfigError(f"security file {str(path)!r} does not exist")
        certificates = {"client": security.certificate}
        if security.server_certificate is not None:
            certificates["server"] = security.server_certificate
        self.certificate_warnings = tuple(
            await asyncio.to_thread(certificate_expiry_warnings, certificates)
        )
        for warning in self.certificate_warnings:
            log.warning("%s: %s", self._name, warning)
        if security.trusted_certificates:
            store = TrustStore(list(security.trusted_certificates), [])
            await store.load()
            client.certificate_validator = CertificateValidator(
                CertificateValidatorOptions.TRUSTED_VALIDATION
                | CertificateValidatorOptions.PEER_SERVER,
                store,
            )
        await client.set_security(
            SecurityPolicyBasic256Sha256,
            certificate=str(security.certificate),
            private_key=str(security.private_key),
            server_certificate=(
                str(security.server_certificate) if security.server_certificate else None
            ),
            mode=getattr(ua.MessageSecurityMode, security.mode),
        )

    async def _resolve_nodes(self, client: Client) -> None:
        try:
            index = await client.get_namespace_index(self.connection.namespace_uri)
        except ValueError:
            raise DriverConfigError(
                f"namespace {self.connection.namespace_uri!r} is not served by "
                f"{self.connection.endpoint}"
            ) from None
        nodes: dict[TagId, ua.NodeId] = {}
        for tag in self.tag_map:
            text = self.tag_map.address(tag).node_id
            full = text if text.startswith(("ns=", "nsu=")) else f"ns={index};{text}"
            try:
                nodes[tag] = ua.NodeId.from_string(full)
            except (ValueError, UaError) as exc:
                raise DriverConfigError(f"tag {tag!r}: bad node id {text!r}: {exc}") from None
        self._nodes = nodes
        self._tag_by_node = {node: tag for tag, node in nodes.items()}
        self._config_errors.clear()
        tags = list(nodes)
        values = await client.read_attributes([client.get_node(nodes[t]) for t in tags])
        for tag, dv in zip(tags, values, strict=True):
            code = dv.StatusCode if dv.StatusCode is not None else ua.StatusCode()
            if code.value in _CONFIG_CODES:
                self._config_errors[tag] = f"{code.name} for node id {nodes[tag].to_string()}"
                log.error(
                    "%s: tag %s: node id %s is not usable on the server (%s); its samples carry "
                    "CONFIG_ERROR quality",
                    self._name,
                    tag,
                    nodes[tag].to_string(),
                    code.name,
                )
            elif dv.Value is not None and dv.Value.VariantType is not None:
                self._variant[tag] = dv.Value.VariantType

    async def _watch_client_state(self, client: Client) -> None:
        async with client.subscribe_state() as changes:
            while True:
                new = await changes.next_change()
                if self._closing:
                    return
                if new is UaClientState.CONNECTED:
                    self._state.set(ConnectionState.CONNECTED, "reconnected")
                    if self._renewing is not None:  # one renewal at a time, for the newest link
                        self._renewing.cancel()
                    self._renewing = asyncio.get_running_loop().create_task(
                        self._renew_subscriptions(), name=f"{self._name}-renew"
                    )
                # asyncua passes through DISCONNECTED between reconnect attempts; its supervisor
                # keeps retrying until close(), so both mean RECONNECTING here.
                elif (
                    new in (UaClientState.RECONNECTING, UaClientState.DISCONNECTED)
                    and self._state.state is not ConnectionState.RECONNECTING
                ):
                    self._state.set(ConnectionState.RECONNECTING, "connection lost")
                    self._fail_subscriptions(Quality.COMM_FAILURE)

    def _fail_subscriptions(self, quality: Quality) -> None:
        now = time.monotonic()
        for handle in tuple(self._subscriptions):
            for sample in failed_samples(handle.tags, quality, now):
                handle.deliver(sample)

    async def close(self) -> None:
        """Stop subscriptions, disconnect and enter CLOSED."""
        self._closing = True
        if self._renewing is not None:
            self._renewing.cancel()
            await asyncio.gather(self._renewing, return_exceptions=True)
            self._renewing = None
        for handle in tuple(self._subscriptions):
            await self._drop_subscription(handle)
        if self._state_task is not None:
            self._state_task.cancel()
            await asyncio.gather(self._state_task, return_exceptions=True)
            self._state_task = None
        client, self._client = self._client, None
        if client is not None:
            await self._discard(client)
        self._state.set(ConnectionState.CLOSED)

    async def _discard(self, client: Client) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), self.connection.timeout_s)

    # --- read -------------------------------------------------------------------------------

    def _usable_client(self) -> Client | None:
        client = self._client
        if client is None or client.state is not UaClientState.CONNECTED:
            return None
        return client

    async def read(self, tags: Sequence[TagId]) -> list[Sample]:
        """Read ``tags`` in one request; one sample per tag, in order.

        Raises:
            DriverConfigError: A tag name is not in the tag map.
        """
        self.tag_map.check(tags)
        received = time.monotonic()
        client = self._usable_client()
        if client is None:
            return failed_samples(tags, Quality.COMM_FAILURE, received)
        try:
            values = await asyncio.wait_for(
                client.read_attributes([client.get_node(self._nodes[t]) for t in tags]),
                self.connection.timeout_s,
            )
        except _TRANSPORT_ERRORS as exc:
            log.warning(
                "%s: read of %d tag(s) failed: %s: %s",
                self._name,
                len(tags),
                type(exc).__name__,
                exc,
            )
            return failed_samples(tags, Quality.COMM_FAILURE, received)
        received = time.monotonic()
        return [self._to_sample(t, dv, received) for t, dv in zip(tags, values, strict=True)]

    def _to_sample(self, tag: TagId, dv: ua.DataValue, received: float) -> Sample:
        source_ts = _aware(dv.SourceTimestamp) or _aware(dv.ServerTimestamp) or utc_now()
        code = dv.StatusCode if dv.StatusCode is not None else ua.StatusCode()
        if tag in self._config_errors and code.value in _CONFIG_CODES:
            return Sample(tag, math.nan, Quality.CONFIG_ERROR, source_ts, received)
        if code.is_bad():
            quality = status_quality(code)
            if quality is Quality.CONFIG_ERROR:
                log.error("%s: tag %s: server answered %s", self._name, tag, code.name)
            return Sample(tag, math.nan, quality, source_ts, received)
        raw: Any = dv.Value.Value if dv.Value is not None else None
        if isinstance(raw, bool | int | float):
            value = float(raw)
        else:
            log.error(
                "%s: tag %s: value of type %s is not a number (type mismatch)",
                self._name,
                tag,
                type(raw).__name__,
            )
            return Sample(tag, math.nan, Quality.CONFIG_ERROR, source_ts, received)
        quality = value_quality(self.tag_map.definition(tag), value)
        if quality is Quality.GOOD and code.is_uncertain():
            quality = Quality.UNCERTAIN
        return Sample(tag, value, quality, source_ts, received)

    # --- subscribe --------------------------------------------------------------------------

    async def subscribe(
        self, tags: Sequence[TagId], on_sample: SampleCallback
    ) -> _OpcUaSubscription:
        """Deliver a sample of each of ``tags`` whenever the server reports a change.

        The first notification of each tag carries its current value. After a reconnect asyncua
        re-creates the subscription; notifications older than the last delivered value are dropped.

        Raises:
            DriverConfigError: A tag name is not in the tag map.
            ConnectionLostError: Not connected.
        """
        self.tag_map.check(tags)
        client = self._usable_client()
        if client is None:
            raise ConnectionLostError(f"{self._name}: cannot subscribe while {self.state}")
        handle = _OpcUaSubscription(self, tuple(tags), on_sample)
        try:
            await self._open(handle, client)
        except _TRANSPORT_ERRORS as exc:
            raise ConnectionLostError(f"{self._name}: subscribe failed: {exc}") from None
        self._subscriptions.append(handle)
        return handle

    async def _open(self, handle: _OpcUaSubscription, client: Client) -> None:
        """Create the server-side subscription of ``handle`` and start pumping its events."""
        tags = handle.tags
        sub = await client.create_subscription(
            self.connection.publishing_interval_ms, queue_maxsize=10_000
        )
        requests = [self._monitor_request(self._nodes[t], i + 1) for i, t in enumerate(tags)]
        try:
            results = await sub.create_monitored_items(requests)
        except BaseException:
            # A half-made subscription would keep publishing to nobody.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sub.delete(), self.connection.timeout_s)
            raise
        handle.subscription = sub
        now = time.monotonic()
        for tag, result in zip(tags, results, strict=True):
            if isinstance(result, ua.StatusCode):
                log.error("%s: tag %s: cannot monitor: %s", self._name, tag, result.name)
                quality = status_quality(result)
                handle.deliver(Sample(tag, math.nan, quality, utc_now(), now))
        handle.task = asyncio.get_running_loop().create_task(
            self._pump(handle, sub), name=f"{self._name}-subscription"
        )

    async def _renew_subscriptions(self) -> None:
        """Replace every subscription with a fresh one after a reconnect.

        asyncua restores subscriptions itself, but when the server drops again while it does so
        (a PLC restarting twice in a row), the restored subscription can stay silent for good:
        connected, yet every input COMM_FAILURE forever (found by the reliability suite). A fresh
        subscription also sends every current value at once.
        """
        for handle in tuple(self._subscriptions):
            client = self._usable_client()
            if client is None or self._closing:
                return
            task, old = handle.task, handle.subscription
            handle.task, handle.subscription = None, None
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            if old is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(old.delete(), self.connection.timeout_s)
            await self._reopen(handle)

    async def _reopen(self, handle: _OpcUaSubscription) -> None:
        """Open ``handle`` again, retrying with backoff while connected.

        A renewal can time out on a loaded machine while the connection itself stays up; giving
        up then left the driver CONNECTED with every input COMM_FAILURE until the next reconnect,
        which may never come (found by the nightly 100-restart run).
        """
        delay = RENEW_RETRY_FIRST_S
        while True:
            client = self._usable_client()
            if client is None or self._closing:
                return  # the next reconnect renews again; the inputs stay COMM_FAILURE until then
            try:
                await self._open(handle, client)
                return
            except (*_TRANSPORT_ERRORS, UaStatusCodeError) as exc:
                log.warning(
                    "%s: renewing a subscription failed (%r); retrying in %.1f s",
                    self._name,
                    exc,
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(2 * delay, RENEW_RETRY_MAX_S)

    def _monitor_request(
        self, node: ua.NodeId, client_handle: int
    ) -> ua.MonitoredItemCreateRequest:
        item = ua.ReadValueId()
        item.NodeId = node
        item.AttributeId = AttributeIds.Value
        params = ua.MonitoringParameters()
        params.ClientHandle = client_handle
        params.SamplingInterval = 0.0
        params.QueueSize = 1
        params.DiscardOldest = True
        params.Filter = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValueTimestamp)
        request = ua.MonitoredItemCreateRequest()
        request.ItemToMonitor = item
        request.MonitoringMode = ua.MonitoringMode.Reporting
        request.RequestedParameters = params
        return request

    async def _pump(self, handle: _OpcUaSubscription, sub: Subscription) -> None:
        async for event in sub:
            if isinstance(event, DataChangeEvent):
                tag = self._tag_by_node.get(event.node.nodeid)
                if tag is None:
                    continue
                sample = self._to_sample(tag, event.data.monitored_item.Value, time.monotonic())
                if not self.accept(sample):
                    log.debug(
                        "%s: tag %s: dropped %s notification older than the last value",
                        self._name,
                        tag,
                        "replayed" if event.replayed else "late",
                    )
                    continue
                handle.deliver(sample)
            elif isinstance(event, StatusChangeEvent):
                code = event.notification.Status
                log.warning("%s: subscription status changed: %s", self._name, code.name)
                if code.is_bad():
                    for sample in failed_samples(
                        handle.tags, Quality.COMM_FAILURE, time.monotonic()
                    ):
                        handle.deliver(sample)

    def accept(self, sample: Sample) -> bool:
        """False if ``sample`` is older than the last value delivered for its tag, else record it.

        Samples without a PLC value (COMM_FAILURE, CONFIG_ERROR) carry the console's time and are
        always accepted without moving the mark, so the first value after a reconnect gets through.
        """
        if sample.quality in (Quality.COMM_FAILURE, Quality.CONFIG_ERROR):
            return True
        last = self._last_source_ts.get(sample.tag)
        if last is not None and sample.source_ts < last:
            return False
        self._last_source_ts[sample.tag] = sample.source_ts
        return True

    async def _drop_subscription(self, handle: _OpcUaSubscription) -> None:
        if handle in self._subscriptions:
            self._subscriptions.remove(handle)
        if handle.task is not None:
            handle.task.cancel()
            await asyncio.gather(handle.task, return_exceptions=True)
            handle.task = None
        sub, handle.subscription = handle.subscription, None
        if sub is not None and self._usable_client() is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sub.delete(), self.connection.timeout_s)

    # --- write ------------------------------------------------------------------------------

    async def write(self, setpoints: Sequence[Setpoint], *, verify: bool = True) -> WriteResult:
        """Write ``setpoints`` in one request, then read them back in one request.

        A status code the server returns for a tag (e.g. ``BadOutOfRange`` from the PLC's limit
        check, ``BadUserAccessDenied`` for a read-only node) becomes REFUSED with that code as the
        reason; unknown nodes and type mismatches become CONFIG_ERROR.
        """
        results: list[TagWriteResult | None] = [self.tag_map.write_problem(sp) for sp in setpoints]
        for i, sp in enumerate(setpoints):
            if results[i] is None and sp.tag in self._config_errors:
                results[i] = TagWriteResult(
                    sp.tag, sp.value, WriteStatus.CONFIG_ERROR, reason=self._config_errors[sp.tag]
                )
        pending = [i for i, r in enumerate(results) if r is None]
        if not pending:
            return WriteResult(tuple(r for r in results if r is not None))
        client = self._usable_client()
        if client is None:
            for i in pending:
                results[i] = TagWriteResult(
                    setpoints[i].tag,
                    setpoints[i].value,
                    WriteStatus.COMM_FAILURE,
                    reason=f"not written: connection {self.state}",
                )
            return WriteResult(tuple(r for r in results if r is not None))
        nodes = [client.get_node(self._nodes[setpoints[i].tag]) for i in pending]
        values = [
            ua.DataValue(_to_variant(setpoints[i].value, self._variant.get(setpoints[i].tag)))
            for i in pending
        ]
        try:
            codes = await asyncio.wait_for(
                client.write_values(nodes, values, raise_on_partial_error=False),
                self.connection.timeout_s,
            )
        except _TRANSPORT_ERRORS as exc:
            for i in pending:
                results[i] = TagWriteResult(
                    setpoints[i].tag,
                    setpoints[i].value,
                    WriteStatus.COMM_FAILURE,
                    reason=f"write request failed: {type(exc).__name__}: {exc}",
                )
            return WriteResult(tuple(r for r in results if r is not None))
        accepted: list[int] = []
        for i, code in zip(pending, codes, strict=True):
            sp = setpoints[i]
            if code.is_good():
                accepted.append(i)
                continue
            status = (
                WriteStatus.CONFIG_ERROR if code.value in _CONFIG_CODES else WriteStatus.REFUSED
            )
            log.warning(
                "%s: write %s=%r refused by the PLC: %s", self._name, sp.tag, sp.value, code.name
            )
            results[i] = TagWriteResult(
                sp.tag, sp.value, status, reason=f"PLC refused: {code.name}"
            )
        if accepted and verify:
            readback = await self.read([setpoints[i].tag for i in accepted])
            for i, sample in zip(accepted, readback, strict=True):
                results[i] = self._verify(setpoints[i], sample)
        else:
            for i in accepted:
                results[i] = TagWriteResult(
                    setpoints[i].tag, setpoints[i].value, WriteStatus.WRITTEN
                )
        return WriteResult(tuple(r for r in results if r is not None))

    def _verify(self, sp: Setpoint, sample: Sample) -> TagWriteResult:
        if sample.quality is Quality.COMM_FAILURE:
            return TagWriteResult(
                sp.tag, sp.value, WriteStatus.COMM_FAILURE, reason="readback failed"
            )
        tolerance = _write_tolerance(self._variant.get(sp.tag), sp.value)
        if readback_matches(sp.value, sample.value, tolerance):
            return TagWriteResult(sp.tag, sp.value, WriteStatus.CONFIRMED, readback=sample.value)
        log.warning(
            "%s: write %s=%r reads back %r (%s)",
            self._name,
            sp.tag,
            sp.value,
            sample.value,
            sample.quality,
        )
        return TagWriteResult(
            sp.tag,
            sp.value,
            WriteStatus.MISMATCH,
            readback=sample.value,
            reason=f"PLC reads back {sample.value!r} ({sample.quality})",
        )


__all__ = ["OpcUaDriver", "status_quality"]
