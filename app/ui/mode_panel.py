"""Mode panel: OFF / ADVISORY / AUTOMATIC with role checks and confirmation dialogs.

Buttons are enabled by the logged-in role (the core checks again; the UI check only avoids
pointless refusals). Entering AUTOMATIC needs an explicit confirmation with a reason; ADVISORY a
plain confirmation; OFF (return to base control) needs neither, and no login.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.config import ModePolicy
from app.controllers.auth import Action, permitted
from app.domain import Mode, Role

DESCRIPTIONS: dict[Mode, str] = {
    Mode.OFF: "The PLC's own base control runs the plant. The console only watches.",
    Mode.ADVISORY: "The agent recommends; an operator approves, modifies or rejects each change.",
    Mode.AUTOMATIC: (
        "Closed loop: recommendations inside the safety envelope are written without an operator "
        "decision. Uncertain or unfamiliar situations still go to the operator."
    ),
}


class ModeConfirmDialog(QDialog):
    """Confirm a mode change; AUTOMATIC needs a ticked confirmation and a reason."""

    def __init__(self, mode: Mode, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("mode_confirm_dialog")
        self.setWindowTitle(f"Switch to {mode.value.upper()}")
        self.mode = mode
        self.reason = QLineEdit()
        self.reason.setObjectName("mode_reason_edit")
        self.reason.setPlaceholderText("Reason (recorded in the ledger)")
        self.confirm = QCheckBox(
            "I confirm that the agent may write setpoints to the PLC without asking"
        )
        self.confirm.setObjectName("mode_confirm_check")
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        text = QLabel(DESCRIPTIONS[mode])
        text.setWordWrap(True)
        form = QFormLayout(self)
        form.addRow(text)
        form.addRow("Reason", self.reason)
        if mode is Mode.AUTOMATIC:
            form.addRow(self.confirm)
            self.confirm.toggled.connect(self._validate)
            self.reason.textChanged.connect(self._validate)
        else:
            self.confirm.setVisible(False)
        form.addRow(self.buttons)
        self._validate()

    def _validate(self) -> None:
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        if ok is not None and self.mode is Mode.AUTOMATIC:
            ok.setEnabled(self.confirm.isChecked() and bool(self.reason.text().strip()))


class ModePanel(QGroupBox):
    """Three mode buttons; ``sig_mode_requested(mode, confirmed, reason)`` after confirmation."""

    sig_mode_requested = Signal(object, bool, str)

    def __init__(self, policy: ModePolicy, parent: QWidget | None = None) -> None:
        super().__init__("Mode", parent)
        self.setObjectName("mode_panel")
        self._policy = policy
        self.mode = Mode.OFF
        self.role: Role | None = None
        self.buttons: dict[Mode, QPushButton] = {}
        row = QHBoxLayout()
        for mode in Mode:
            button = QPushButton(mode.value.upper())
            button.setObjectName(f"mode_{mode.value}")
            button.setCheckable(True)
            button.setToolTip(DESCRIPTIONS[mode])
            button.clicked.connect(lambda _=False, m=mode: self._on_mode_clicked(m))
            self.buttons[mode] = button
            row.addWidget(button)
        self.explanation = QLabel("")
        self.explanation.setWordWrap(True)
        self.result = QLabel("")
        self.result.setObjectName("mode_result")
        self.result.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.explanation)
        layout.addWidget(self.result)
        self.dialog: ModeConfirmDialog | None = None
        self.set_mode(Mode.OFF)

    def automatic_role(self) -> Role:
        """The role the site requires for AUTOMATIC."""
        return Role.SUPERVISOR if self._policy.automatic_min_role == "supervisor" else Role.ENGINEER

    def allowed(self, mode: Mode) -> bool:
        """True if the logged-in role may ask for ``mode``."""
        if mode is Mode.OFF:
            return permitted(self.role, Action.RETURN_TO_BASE_CONTROL)
        if mode is Mode.ADVISORY:
            return permitted(self.role, Action.MODE_ADVISORY)
        return self.role is not None and self.role >= self.automatic_role()

    def set_role(self, role: Role | None) -> None:
        """Enable the buttons the role may use."""
        self.role = role
        self._update()

    def set_mode(self, mode: Mode) -> None:
        """Show the current mode."""
        self.mode = mode
        self._update()

    def _update(self) -> None:
        for mode, button in self.buttons.items():
            button.setChecked(mode is self.mode)
            button.setEnabled(mode is not self.mode and self.allowed(mode))
        needs = {
            Mode.ADVISORY: "operator",
            Mode.AUTOMATIC: self.automatic_role().name.lower(),
        }
        hints = [f"{m.value.upper()} needs the {r} role" for m, r in needs.items()]
        self.explanation.setText(DESCRIPTIONS[self.mode] + "\n" + "; ".join(hints) + ".")

    def _on_mode_clicked(self, mode: Mode) -> None:
        self.buttons[mode].setChecked(mode is self.mode)
        if mode is Mode.OFF:
            self.sig_mode_requested.emit(mode, False, "operator returned to base control")
            return
        dialog = ModeConfirmDialog(mode, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(
            lambda: self.sig_mode_requested.emit(
                mode, mode is Mode.AUTOMATIC, dialog.reason.text().strip()
            )
        )
        self.dialog = dialog
        dialog.open()


__all__ = ["DESCRIPTIONS", "ModeConfirmDialog", "ModePanel"]
