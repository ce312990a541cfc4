"""``aurl serve``: an HTTP API (FastAPI) over the generation pipeline, with continuous batching."""
