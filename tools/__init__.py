"""Tooling that never runs in the server: model builds and calibration, benchmarks, evaluation.

Needs the extra packages of ``requirements-tools.txt`` (``onnx``, ``requests``, ``psutil``);
the runtime image has none of this package's imports.
"""
