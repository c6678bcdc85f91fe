"""Model-agnostic exact coding: the reference coder's compiled twin and its batched drivers."""
