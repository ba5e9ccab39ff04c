"""Dramatiq actors, the outbox relay and the worker entry."""
