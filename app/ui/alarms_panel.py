"""Alarms: the active alarm list (ack with a note, shelve for a time) and the alarm journal.

ISA-18.2 / ISA-101: only the priority cell is coloured (red high/critical, yellow medium, blue low);
everything else stays grey. The lists are fetched from the core as futures whenever an
``AlarmChanged`` event arrives, so the GUI never reads controller state directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.controllers.alarms import JournalEntry
from app.domain import Alarm, AlarmPriority, AlarmState
from app.ui import style
from app.ui.bridge import UiBridge
from app.ui.coalesce import CoalescedRefresh

SHELVE_CHOICES_S: tuple[tuple[str, float], ...] = (
    ("15 min", 900.0),
    ("1 h", 3600.0),
    ("4 h", 4 * 3600.0),
    ("8 h (one shift)", 8 * 3600.0),
)


@dataclass(frozen=True, slots=True)
class AlarmView:
    """What the alarm panel shows: the alarm list and the journal (newest last)."""

    alarms: tuple[Alarm, ...]
    journal: tuple[JournalEntry, ...]


def _item(text: str) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
    return item


def _priority_item(priority: AlarmPriority) -> QTableWidgetItem:
    item = _item(priority.name.title())
    colour = style.ALARM_COLOURS[priority]
    item.setBackground(colour)
    item.setForeground(QColor("#ffffff") if priority >= AlarmPriority.HIGH else style.TEXT)
    return item


class NoteDialog(QDialog):
    """Ask for a note (ack) or a reason and a duration (shelve)."""

    def __init__(self, title: str, with_duration: bool, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setObjectName("alarm_note_dialog")
        self.note = QPlainTextEdit()
        self.note.setMaximumHeight(style.em(self, 4))
        self.duration = QComboBox()
        for label, seconds in SHELVE_CHOICES_S:
            self.duration.addItem(label, seconds)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        if with_duration:
            form.addRow("Shelve for", self.duration)
            form.addRow("Reason", self.note)
            self.note.textChanged.connect(self._validate)
            self._validate()
        else:
            form.addRow("Note", self.note)
        form.addRow(self.buttons)

    def _validate(self) -> None:
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        if ok is not None:
            ok.setEnabled(bool(self.note.toPlainText().strip()))


class AlarmsPanel(QWidget):
    """Alarm list and journal with filters.

    Signals:
        sig_ack_requested(alarm_id, note)
        sig_shelve_requested(alarm_id, duration_s, reason)
        sig_unshelve_requested(alarm_id)
    """

    sig_ack_requested = Signal(str, str)
    sig_shelve_requested = Signal(str, float, str)
    sig_unshelve_requested = Signal(str)

    LIST_COLUMNS = ("Priority", "State", "Alarm", "Message", "Raised", "Acked by", "Note")
    JOURNAL_COLUMNS = ("#", "Time", "Priority", "Alarm", "Event", "From", "To", "User", "Note")

    def __init__(
        self,
        fetch: Callable[[], Future[AlarmView]],
        bridge: UiBridge,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("alarms_panel")
        self.view = AlarmView((), ())
        self._refresher = CoalescedRefresh(bridge, fetch, self._on_fetched)

        self.priority_filter = QComboBox()
        self.priority_filter.addItem("All priorities", 0)
        for p in sorted(AlarmPriority, reverse=True):
            self.priority_filter.addItem(f"{p.name.title()} and above", int(p))
        self.text_filter = QLineEdit()
        self.text_filter.setPlaceholderText("Filter by alarm id or text")
        self.text_filter.setClearButtonEnabled(True)
        self.priority_filter.currentIndexChanged.connect(self._render)
        self.text_filter.textChanged.connect(self._render)
        filters = QHBoxLayout()
        filters.addWidget(QLabel("Show"))
        filters.addWidget(self.priority_filter)
        filters.addWidget(self.text_filter, 1)

        self.table = self._table(self.LIST_COLUMNS)
        self.table.setObjectName("alarm_list")
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.journal = self._table(self.JOURNAL_COLUMNS)
        self.journal.setObjectName("alarm_journal")

        self.ack_button = QPushButton("Ac&knowledge…")
        self.ack_button.setObjectName("ack_alarm")
        self.shelve_button = QPushButton("&Shelve…")
        self.shelve_button.setObjectName("shelve_alarm")
        self.unshelve_button = QPushButton("Unshelve")
        self.unshelve_button.setObjectName("unshelve_alarm")
        self.ack_button.clicked.connect(self._on_ack_clicked)
        self.shelve_button.clicked.connect(self._on_shelve_clicked)
        self.unshelve_button.clicked.connect(self._on_unshelve_clicked)
        self.summary = QLabel("")
        actions = QHBoxLayout()
        actions.addWidget(self.ack_button)
        actions.addWidget(self.shelve_button)
        actions.addWidget(self.unshelve_button)
        actions.addStretch(1)
        actions.addWidget(self.summary)

        active = QWidget()
        active_layout = QVBoxLayout(active)
        active_layout.addWidget(self.table, 1)
        active_layout.addLayout(actions)
        self.tabs = QTabWidget()
        self.tabs.addTab(active, "Alarm list")
        self.tabs.addTab(self.journal, "Journal")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(filters)
        layout.addWidget(self.tabs, 1)
        self._update_buttons()

    @staticmethod
    def _table(columns: Sequence[str]) -> QTableWidget:
        table = QTableWidget(0, len(columns))
        table.setHorizontalHeaderLabels(list(columns))
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        table.setAlternatingRowColors(True)
        table.verticalHeader().setVisible(False)
        header = table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        return table

    # --- data --------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Fetch the lists from the core (coalesces requests while one is on its way)."""
        self._refresher.request()

    def _on_fetched(self, future: Future[AlarmView]) -> None:
        try:
            self.view = future.result()
        except Exception as exc:  # noqa: BLE001 - shown; the next event fetches again
            self._render()  # the last good lists stay; the summary says they are not current
            self.summary.setText(f"alarm list unavailable: {exc}")
            return
        self._render()

    def _matches(self, priority: AlarmPriority, alarm_id: str, text: str) -> bool:
        floor = int(self.priority_filter.currentData() or 0)
        needle = self.text_filter.text().strip().lower()
        return priority >= floor and (
            not needle or needle in alarm_id.lower() or needle in text.lower()
        )

    def _render(self) -> None:
        alarms = [a for a in self.view.alarms if self._matches(a.priority, a.alarm_id, a.message)]
        selected = self.selected_alarm_id()
        self.table.setRowCount(len(alarms))
        for row, alarm in enumerate(alarms):
            cells = (
                _priority_item(alarm.priority),
                _item(alarm.state.value.replace("_", " ")),
                _item(alarm.alarm_id),
                _item(alarm.message),
                _item(f"{alarm.raised_at.astimezone():%Y-%m-%d %H:%M:%S}"),
                _item(alarm.acked_by or ""),
                _item(alarm.note),
            )
            for col, cell in enumerate(cells):
                self.table.setItem(row, col, cell)
            if alarm.alarm_id == selected:
                self.table.selectRow(row)
        entries = [
            e for e in reversed(self.view.journal) if self._matches(e.priority, e.alarm_id, e.note)
        ]
        self.journal.setRowCount(len(entries))
        for row, entry in enumerate(entries):
            journal_cells = (
                _item(str(entry.seq)),
                _item(f"{entry.at.astimezone():%Y-%m-%d %H:%M:%S}"),
                _priority_item(entry.priority),
                _item(entry.alarm_id),
                _item(entry.event.value),
                _item(entry.old_state.value),
                _item(entry.new_state.value),
                _item(entry.user or ""),
                _item(entry.note),
            )
            for col, cell in enumerate(journal_cells):
                self.journal.setItem(row, col, cell)
        unacked = sum(
            a.state in (AlarmState.UNACKED, AlarmState.RTN_UNACKED) for a in self.view.alarms
        )
        self.summary.setText(f"{len(self.view.alarms)} alarms, {unacked} unacknowledged")
        self._update_buttons()

    # --- actions -----------------------------------------------------------------------------------

    def selected_alarm(self) -> Alarm | None:
        """The alarm selected in the list."""
        alarm_id = self.selected_alarm_id()
        return next((a for a in self.view.alarms if a.alarm_id == alarm_id), None)

    def selected_alarm_id(self) -> str | None:
        """Id of the selected alarm."""
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        item = self.table.item(rows[0].row(), 2)
        return item.text() if item is not None else None

    def select(self, alarm_id: str) -> bool:
        """Select ``alarm_id`` in the list; False if it is not shown."""
        for row in range(self.table.rowCount()):
            item = self.table.item(row, 2)
            if item is not None and item.text() == alarm_id:
                self.table.selectRow(row)
                return True
        return False

    def _update_buttons(self) -> None:
        alarm = self.selected_alarm()
        state = alarm.state if alarm is not None else None
        self.ack_button.setEnabled(state in (AlarmState.UNACKED, AlarmState.RTN_UNACKED))
        self.shelve_button.setEnabled(
            state in (AlarmState.UNACKED, AlarmState.ACKED, AlarmState.RTN_UNACKED)
        )
        self.unshelve_button.setEnabled(state is AlarmState.SHELVED)

    def _on_ack_clicked(self) -> None:
        alarm_id = self.selected_alarm_id()
        if alarm_id is None:
            return
        dialog = NoteDialog(f"Acknowledge {alarm_id}", with_duration=False, parent=self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(
            lambda: self.sig_ack_requested.emit(alarm_id, dialog.note.toPlainText().strip())
        )
        self.note_dialog = dialog
        dialog.open()

    def _on_shelve_clicked(self) -> None:
        alarm_id = self.selected_alarm_id()
        if alarm_id is None:
            return
        dialog = NoteDialog(f"Shelve {alarm_id}", with_duration=True, parent=self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(
            lambda: self.sig_shelve_requested.emit(
                alarm_id, float(dialog.duration.currentData()), dialog.note.toPlainText().strip()
            )
        )
        self.note_dialog = dialog
        dialog.open()

    def _on_unshelve_clicked(self) -> None:
        alarm_id = self.selected_alarm_id()
        if alarm_id is not None:
            self.sig_unshelve_requested.emit(alarm_id)


__all__ = ["SHELVE_CHOICES_S", "AlarmView", "AlarmsPanel", "NoteDialog"]
