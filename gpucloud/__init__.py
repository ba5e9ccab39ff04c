"""Composition root: builds the app, the CLI and the worker from the layers. Nothing imports it."""
