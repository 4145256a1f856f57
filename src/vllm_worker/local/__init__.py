"""A local RunPod endpoint: the platform's public API and job queue in front of a real worker."""
