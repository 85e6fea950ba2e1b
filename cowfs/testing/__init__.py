"""Public hypothesis toolkit that property-tests overlay implementations (SPEC §9)."""
