"""The lifecycle: intake, checks, codes, tokens, erasure. No HTTP objects here; no commits."""
