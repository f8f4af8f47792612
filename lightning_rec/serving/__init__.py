"""`lightning-rec serve`: a trained recommender behind HTTP (FastAPI + uvicorn, docs/serving.md)."""
