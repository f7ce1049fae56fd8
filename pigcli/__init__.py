"""pig: text-to-video retrieval with pseudo-query interaction (PIG) as composable HDF5 stages."""

__version__ = "0.1.0"
