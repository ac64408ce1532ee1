"""Control node: chunk scheduler (pure), its durable state, the gRPC service."""
