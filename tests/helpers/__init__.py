"""Helpers shared by cowfs's tests (capabilities, layer tars, mounting)."""
