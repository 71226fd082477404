"""The Qt-free control core: plant I/O ownership, safety envelope, modes, agents, alarms, ledger."""
