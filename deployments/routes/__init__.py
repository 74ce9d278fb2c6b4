"""The HTTP routes, one module per resource; `deployments.router` mounts them."""
