"""ONNX policy host: verified agent packages, old/new agent slots, shadow duel, fallback chain."""
