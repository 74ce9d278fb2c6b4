"""Ray Serve deployments: one model server per configuration, and the HTTP router."""
