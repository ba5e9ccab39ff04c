"""The business of gpucloud: entities, rules, ports and use cases. No frameworks, no I/O."""
