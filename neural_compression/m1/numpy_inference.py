"""Old import path of neural_compression.transformer.numpy_inference (kept for its importers).

`from neural_compression.m1 import numpy_inference` returns the very same module object, so
names, private helpers and monkeypatches all stay one.
"""
import sys

from neural_compression.transformer import numpy_inference as _numpy_inference

sys.modules[__name__] = _numpy_inference
