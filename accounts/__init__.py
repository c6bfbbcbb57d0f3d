"""People and their keys: users (``AUTH_USER_MODEL``), wallets linked by Sign-In with Ethereum, API tokens and the
login limits. Above ``common`` and ``ledger``; below every app that has users."""
