"""A RunPod serverless worker that serves an open LLM with vLLM."""
