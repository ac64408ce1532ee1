"""Transfer node: copy engine (`domas copy`), the agent, the download client."""
