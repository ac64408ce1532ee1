"""Control node: scheduler, gRPC service, catalogue, discovery, lifecycle, data service."""
