"""Transfer node: copy engine, storage backends, agent and download client."""
