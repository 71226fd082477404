"""The banner along the top of the window: mode, fallback state, connections, agent, user, and the
always-visible "Return to base control" button (no login needed: IEC 62443-3-3 SR 1.1).

Grey when the PLC runs the plant; the AI's states are marked (ADVISORY light blue, AUTOMATIC dark
blue); abnormal states are coloured (fallback away from the local agent: yellow; a connection
lost: yellow, failed for good: red).
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from app.agent_runtime.fallback import FallbackState
from app.domain import AgentVersion, AlarmPriority, ConnectionState, Mode
from app.ui import style

MODE_TEXT: dict[Mode, str] = {
    Mode.OFF: "OFF · PLC base control",
    Mode.ADVISORY: "ADVISORY · operator decides",
    Mode.AUTOMATIC: "AUTOMATIC · agent writes",
}
FALLBACK_TEXT: dict[FallbackState, str] = {
    FallbackState.ACTIVE_LOCAL: "local agent",
    FallbackState.PREVIOUS_LOCAL: "FALLBACK: previous agent",
    FallbackState.CLOUD: "FALLBACK: cloud endpoint",
    FallbackState.SAFE_HOLD: "FALLBACK: safe hold",
    FallbackState.BASE_CONTROL: "base control",
}
_FAILED = (ConnectionState.AUTH_FAILED, ConnectionState.CONFIG_ERROR)


def _restyle(label: QWidget) -> None:
    label.style().unpolish(label)
    label.style().polish(label)


class ModeBanner(QFrame):
    """Status banner; ``sig_return_to_base_requested`` when the hand-back button is pressed."""

    sig_return_to_base_requested = Signal()
    sig_login_requested = Signal()
    sig_logout_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("mode_banner")
        self.mode = Mode.OFF
        self.fallback = FallbackState.BASE_CONTROL
        self.mode_label = QLabel()
        self.mode_label.setObjectName("mode_label")
        self.reason_label = QLabel("")
        self.reason_label.setObjectName("mode_reason")
        self.fallback_label = QLabel()
        self.fallback_label.setObjectName("fallback_label")
        self.connection_labels: dict[str, QLabel] = {}
        self.agent_label = QLabel("no agent loaded")
        self.agent_label.setObjectName("agent_label")
        self.alarm_label = QLabel("")
        self.alarm_label.setObjectName("alarm_label")
        self.user_label = QLabel("not logged in")
        self.user_label.setObjectName("user_label")
        self.login_button = QPushButton("Log &in…")
        self.login_button.setObjectName("login")
        self.logout_button = QPushButton("Log &out")
        self.logout_button.setObjectName("logout")
        self.logout_button.setVisible(False)
        self.return_button = QPushButton("Return to base control")
        self.return_button.setObjectName("return_to_base")
        self.return_button.setToolTip(
            "Hand the plant back to the PLC's own control now. Works without a login."
        )
        self.return_button.clicked.connect(self.sig_return_to_base_requested.emit)
        self.login_button.clicked.connect(self.sig_login_requested.emit)
        self.logout_button.clicked.connect(self.sig_logout_requested.emit)

        # Two rows, so the banner fits a 1366-pixel screen: the mode and the hand-back on top,
        # connections, agent, alarms and the user below.
        top = QHBoxLayout()
        top.addWidget(self.mode_label)
        top.addWidget(self.fallback_label)
        top.addWidget(self.reason_label, 1)
        top.addWidget(self.return_button)
        bottom = QHBoxLayout()
        bottom.setSpacing(style.em(self, 0.8))
        for system, title in (("plc", "PLC"), ("cloud", "Cloud"), ("endpoint", "Endpoint")):
            label = QLabel(f"{title}: –")
            label.setObjectName(f"conn_{system}")
            self.connection_labels[system] = label
            bottom.addWidget(label)
        bottom.addWidget(self.agent_label)
        bottom.addStretch(1)
        bottom.addWidget(self.alarm_label)
        bottom.addWidget(self.user_label)
        bottom.addWidget(self.login_button)
        bottom.addWidget(self.logout_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 4)
        layout.setSpacing(2)
        layout.addLayout(top)
        layout.addLayout(bottom)
        self.set_mode(Mode.OFF, "")
        self.set_fallback(FallbackState.BASE_CONTROL)

    def set_mode(self, mode: Mode, reason: str) -> None:
        """Show ``mode`` and why it was entered."""
        self.mode = mode
        self.mode_label.setText(MODE_TEXT[mode])
        self.mode_label.setProperty("mode", mode.value)
        self.reason_label.setText(reason)
        self.return_button.setEnabled(mode is not Mode.OFF)
        _restyle(self.mode_label)

    def set_fallback(self, state: FallbackState) -> None:
        """Show who provides the setpoints; coloured when not the local agent."""
        self.fallback = state
        self.fallback_label.setText(FALLBACK_TEXT[state])
        abnormal = state not in (FallbackState.ACTIVE_LOCAL, FallbackState.BASE_CONTROL)
        self.fallback_label.setProperty("abnormal", "true" if abnormal else "false")
        _restyle(self.fallback_label)

    def set_connection(self, system: str, state: ConnectionState | None, detail: str = "") -> None:
        """Show a connection's state (``None``: not configured)."""
        label = self.connection_labels.get(system)
        if label is None:
            return
        title = {"plc": "PLC", "cloud": "Cloud", "endpoint": "Endpoint"}[system]
        if state is None:
            label.setText(f"{title}: off")
            label.setProperty("conn", "connected")
        else:
            text = state.value.replace("_", " ")
            label.setText(
                f"{title}: {text if state is ConnectionState.CONNECTED else text.upper()}"
            )
            kind = (
                "connected"
                if state is ConnectionState.CONNECTED
                else "failed"
                if state in _FAILED
                else "abnormal"
            )
            label.setProperty("conn", kind)
        label.setToolTip(detail)
        _restyle(label)

    def set_agent(self, active: AgentVersion | None, candidate: AgentVersion | None) -> None:
        """Show the active agent (and a candidate in shadow)."""
        if active is None:
            self.agent_label.setText("no agent loaded")
        else:
            text = f"agent {active.version}"
            if candidate is not None:
                text += f" (shadow: {candidate.version})"
            self.agent_label.setText(text)

    def set_alarms(self, unacked: int, highest: AlarmPriority | None) -> None:
        """Show the count of unacknowledged alarms, coloured by the highest priority."""
        if unacked == 0 or highest is None:
            self.alarm_label.setText("")
            self.alarm_label.setProperty("alarm", "")
        else:
            self.alarm_label.setText(f"{unacked} unacked alarm{'s' if unacked != 1 else ''}")
            self.alarm_label.setProperty("alarm", highest.name.lower())
        _restyle(self.alarm_label)

    def set_user(self, user: str | None, role: str | None) -> None:
        """Show who is logged in."""
        if user is None:
            self.user_label.setText("not logged in")
        else:
            self.user_label.setText(f"{user} ({role})")
        self.login_button.setText("Switch &user…" if user else "Log &in…")
        self.logout_button.setVisible(user is not None)


__all__ = ["FALLBACK_TEXT", "MODE_TEXT", "ModeBanner"]
