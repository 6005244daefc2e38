"""Verifier plug-ins: the contract (``base``), the registry, and the verifiers."""
