"""Identity and access: accounts, sessions, API tokens, scopes and the one access check."""
