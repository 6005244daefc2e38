"""SMS sender plug-ins, kept apart from verifiers."""
