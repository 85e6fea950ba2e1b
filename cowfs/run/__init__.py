"""Launch namespaced processes on a merged view: containers and their lifecycle."""
