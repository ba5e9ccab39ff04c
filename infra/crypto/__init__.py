"""Cryptography adapters: the envelope cipher for secrets at rest and the KMS adapters."""
