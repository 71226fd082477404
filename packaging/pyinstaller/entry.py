"""Entry point of the frozen ``intelwatt`` executable.

``intelwatt`` with no arguments opens the console (a double-click in a file manager or the
Start menu); ``intelwatt --self-test [...]`` runs the installation check; anything else is the
normal ``intelwatt`` command line (``headless``, ``plant``, ``console --site ...``).
"""

import multiprocessing
import sys

from app.cli import main


def run(argv: list[str]) -> int:
    """Dispatch the frozen executable's arguments."""
    if argv and argv[0] == "--self-test":
        from app.selftest import main as self_test

        return self_test(argv[1:])
    return main(argv or ["console"])


if __name__ == "__main__":
    multiprocessing.freeze_support()  # a spawned child of the frozen program runs its target
    sys.exit(run(sys.argv[1:]))
