"""The PySide6 + pyqtgraph operator console: the only package that imports Qt."""
