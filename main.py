"""``python main.py`` is the same as ``intelwatt console``."""

import multiprocessing
import sys

from app.cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()
    sys.exit(main(["console", *sys.argv[1:]]))
