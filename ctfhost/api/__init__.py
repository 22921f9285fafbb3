"""The REST API under /api/v1: one module per resource (routes and schemas); `server` puts them together."""
