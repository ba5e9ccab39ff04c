"""Strawberry types, inputs, enums, errors and context: the shape clients see."""
