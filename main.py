"""``python main.py`` is the same as ``intelwatt console``."""

import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main(["console", *sys.argv[1:]]))
