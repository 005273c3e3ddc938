"""Stories: each starts what a user starts (the API, the worker, Dagster's jobs and sensors, a real
Redis and MLflow) and walks one path end to end, asserting what the user sees."""
