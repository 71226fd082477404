"""Event / audit log: the hash-chained ledger, filtered and paged.

Queries run on the panel's own reader thread (SQLite connections belong to the thread that opened
them, and the GUI thread never does I/O); results come back through the bridge. The ledger is opened
read-only, so the control core keeps appending meanwhile (WAL).
"""

from __future__ import annotations

import json
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.concurrency import SerialWorker
from app.controllers.ledger import AuditFilter, AuditPage, LedgerReader
from app.domain import OriginKind
from app.ui import style
from app.ui.bridge import UiBridge

KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("All events", ()),
    ("Decisions", ("recommendation", "decision")),
    ("Writes", ("write", "write_result", "write_requested")),
    ("Mode changes", ("mode_change",)),
    ("Agents", ("model_load", "promote", "rollback", "agent_swap")),
    ("Alarms", ("alarm",)),
    ("Logins", ("login", "logout", "login_failed", "lockout", "session_expired")),
)
PERIODS: tuple[tuple[str, float | None], ...] = (
    ("Any time", None),
    ("Last hour", 3600.0),
    ("Last 24 h", 86400.0),
    ("Last 7 days", 7 * 86400.0),
)
PAGE = 200


class _Reader:
    """The ledger reader, opened and used only on the reader thread."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._reader: LedgerReader | None = None

    def query(self, flt: AuditFilter, offset: int, limit: int) -> AuditPage:
        if self._reader is None:
            self._reader = LedgerReader(self._path)
        return self._reader.query(flt, offset=offset, limit=limit)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class AuditPanel(QWidget):
    """Filters above a table of ledger records; the selected record's details below."""

    COLUMNS = ("#", "Time", "Kind", "Origin", "Role", "Summary")

    def __init__(self, ledger_path: Path, bridge: UiBridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("audit_panel")
        self._bridge = bridge
        self._reader = _Reader(ledger_path)
        self._worker = SerialWorker("audit-reader")
        self._worker.start()
        self._seq = 0
        self.page: AuditPage | None = None
        self.offset = 0

        self.kind = QComboBox()
        self.kind.setObjectName("audit_kind")
        for label, kinds in KINDS:
            self.kind.addItem(label, kinds)
        self.origin = QComboBox()
        self.origin.addItem("Anyone", None)
        for origin in OriginKind:
            self.origin.addItem(origin.value.replace("_", " "), origin)
        self.period = QComboBox()
        for label, seconds in PERIODS:
            self.period.addItem(label, seconds)
        self.user = QLineEdit()
        self.user.setPlaceholderText("User / agent version")
        self.user.setClearButtonEnabled(True)
        self.text = QLineEdit()
        self.text.setObjectName("audit_text")
        self.text.setPlaceholderText("Search summary and details")
        self.text.setClearButtonEnabled(True)
        for combo in (self.kind, self.origin, self.period):
            combo.currentIndexChanged.connect(self.reload)
        for edit in (self.user, self.text):
            edit.returnPressed.connect(self.reload)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.reload)
        filters = QHBoxLayout()
        for widget in (self.kind, self.origin, self.period, self.user):
            filters.addWidget(widget)
        filters.addWidget(self.text, 1)
        filters.addWidget(refresh)

        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setObjectName("audit_table")
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self._show_details)
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setMinimumHeight(style.em(self, 4))
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.table)
        split.addWidget(self.details)
        split.setStretchFactor(0, 4)
        split.setStretchFactor(1, 1)

        self.status = QLabel("")
        self.prev_button = QPushButton("◀ Newer")
        self.next_button = QPushButton("Older ▶")
        self.prev_button.clicked.connect(lambda: self._go(-PAGE))
        self.next_button.clicked.connect(lambda: self._go(PAGE))
        pager = QHBoxLayout()
        pager.addWidget(self.status, 1)
        pager.addWidget(self.prev_button)
        pager.addWidget(self.next_button)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(filters)
        layout.addWidget(split, 1)
        layout.addLayout(pager)

    def current_filter(self) -> AuditFilter:
        """The filter the controls describe."""
        seconds = self.period.currentData()
        origin = self.origin.currentData()
        since = None if seconds is None else datetime.now(UTC) - timedelta(seconds=seconds)
        return AuditFilter(
            kinds=tuple(self.kind.currentData() or ()),
            origin_kind=None if origin is None else OriginKind(origin),
            origin_name=self.user.text().strip() or None,
            since=since,
            text=self.text.text().strip() or None,
        )

    def reload(self) -> None:
        """Query the first page again."""
        self.offset = 0
        self._query()

    def _go(self, delta: int) -> None:
        self.offset = max(0, self.offset + delta)
        self._query()

    def _query(self) -> None:
        self._seq += 1
        seq = self._seq
        self.status.setText("loading…")
        if not self._worker.running:
            return
        future = self._worker.submit(self._reader.query, self.current_filter(), self.offset, PAGE)
        self._bridge.when_done(future, lambda f: self._on_page(seq, f))

    def _on_page(self, seq: int, future: Future[AuditPage]) -> None:
        if seq != self._seq:
            return
        try:
            page = future.result()
        except Exception as exc:  # noqa: BLE001 - the reason is shown; Refresh retries
            self.status.setText(f"audit log unavailable: {exc}")
            self.table.setRowCount(0)
            return
        self.page = page
        self.table.setRowCount(len(page.records))
        for row, record in enumerate(page.records):
            event = record.event
            role = event.origin.role.name.lower() if event.origin.role is not None else ""
            cells = (
                str(record.seq),
                f"{event.at.astimezone():%Y-%m-%d %H:%M:%S}",
                event.kind,
                f"{event.origin.kind.value}: {event.origin.name}",
                role,
                event.summary,
            )
            for col, text in enumerate(cells):
                self.table.setItem(row, col, QTableWidgetItem(text))
        first = page.offset + 1 if page.records else 0
        self.status.setText(f"{first}–{page.offset + len(page.records)} of {page.total} records")
        self.prev_button.setEnabled(page.offset > 0)
        self.next_button.setEnabled(page.has_more)
        self._show_details()

    def _show_details(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if self.page is None or not rows or rows[0].row() >= len(self.page.records):
            self.details.setPlainText("")
            return
        record = self.page.records[rows[0].row()]
        body = json.dumps(record.event.data, indent=2, ensure_ascii=False, default=str)
        self.details.setPlainText(
            f"{record.event.summary}\n\nseq {record.seq} · hash {record.hash[:16]}… "
            f"(previous {record.prev_hash[:16]}…)\n{body}"
        )

    def stop(self) -> None:
        """Close the reader and join its thread."""
        if self._worker.running:
            self._worker.submit(self._reader.close)
            self._worker.stop()


__all__ = ["KINDS", "AuditPanel"]
