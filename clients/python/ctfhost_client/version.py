"""The client's own version, and the server versions it was written for."""

__version__ = "0.1.0"

# the API this client speaks (/api/v1) and the server series it was written for
SUPPORTED_API_MAJOR = 1
SUPPORTED_SERVER_MAJOR = 0
