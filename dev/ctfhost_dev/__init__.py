"""The development stack behind `make demo` (not shipped: a distribution of its own, installed by the Makefile)."""
