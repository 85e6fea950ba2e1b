"""OCI distribution protocol client: pull and push images to registries."""
