"""Archive service: discovery sources, data policy (lifecycle), archiver, scrubber, catalogue operator tools."""
