"""The core's own features written as plugins, registered by the app factory `trylast` so installed plugins win."""
