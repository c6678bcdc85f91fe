"""Beam preprocessing pipeline for training LLMs over neurally compressed text."""
