"""HTTP routes, one module per area; `credence.app` includes each module's `router`."""
