"""The pyfuse3 + trio frontend over the overlay core; the only importer of pyfuse3."""
