"""The content-addressed layer store: import, unpack, export, gc (SPEC §2)."""
