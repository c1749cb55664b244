"""One stage per file; ``broker.pipeline`` holds their order."""
