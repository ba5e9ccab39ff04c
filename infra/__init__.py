"""Adapters: database, Redis, brokers, settings, logging and metrics behind the domain's ports."""
