"""Offline: SB3 training, ONNX export, evaluation, continuous training (torch imported lazily)."""
