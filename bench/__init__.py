"""`make bench`: the worker's overhead over raw vLLM, path by path, on one machine and model."""
