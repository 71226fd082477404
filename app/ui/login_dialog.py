"""Login dialog: user name and password, checked by the core off the GUI thread.

Password hashing (scrypt) takes a noticeable fraction of a second, so the dialog submits the login
and reacts when the future completes; the GUI stays responsive and the buttons are disabled
meanwhile. In demo mode (only) a hint lists the demo accounts.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from app.controllers.auth import AccountLocked, AuthError, Session
from app.ui.bridge import UiBridge

LoginRequest = Callable[[str, str], "Future[Session]"]


class LoginDialog(QDialog):
    """Ask for credentials; emits ``sig_logged_in(session)`` and closes on success."""

    sig_logged_in = Signal(object)

    def __init__(
        self,
        login: LoginRequest,
        bridge: UiBridge,
        *,
        demo_hint: str = "",
        user: str = "",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("login_dialog")
        self.setWindowTitle("Log in")
        self._login = login
        self._bridge = bridge
        self.user = QLineEdit(user)
        self.user.setObjectName("login_user")
        self.password = QLineEdit()
        self.password.setObjectName("login_password")
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.error = QLabel("")
        self.error.setObjectName("login_error")
        self.error.setWordWrap(True)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.accepted.connect(self.submit)
        self.buttons.rejected.connect(self.reject)
        form = QFormLayout()
        form.addRow("User", self.user)
        form.addRow("Password", self.password)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        if demo_hint:
            hint = QLabel(demo_hint)
            hint.setObjectName("demo_hint")
            hint.setWordWrap(True)
            layout.addWidget(hint)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)
        self.pending = False
        (self.password if user else self.user).setFocus()

    def submit(self) -> None:
        """Send the credentials to the core (the OK button and Enter)."""
        if self.pending:
            return
        name = self.user.text().strip()
        if not name:
            self.error.setText("Enter a user name.")
            return
        self.pending = True
        self.error.setText("Checking…")
        self.buttons.setEnabled(False)
        future = self._login(name, self.password.text())
        self._bridge.when_done(future, self._on_login_done)

    def _on_login_done(self, future: Future[Session]) -> None:
        self.pending = False
        self.buttons.setEnabled(True)
        try:
            session = future.result()
        except AccountLocked as exc:
            self.error.setText(str(exc))
            self.password.clear()
            return
        except AuthError as exc:
            self.error.setText(f"Login failed: {exc}")
            self.password.clear()
            self.password.setFocus()
            return
        self.error.setText("")
        self.sig_logged_in.emit(session)
        self.accept()


__all__ = ["LoginDialog", "LoginRequest"]
