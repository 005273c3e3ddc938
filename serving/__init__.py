"""api-host and feedback processor: the FastAPI app (``serving.main``) and the stream worker."""
