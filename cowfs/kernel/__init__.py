"""The kernel overlayfs fast path: option building, feature probes, mount/umount."""
