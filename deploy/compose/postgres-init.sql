-- docker-compose.yaml: the postgres image creates the dagster database; MLflow gets its own
CREATE DATABASE mlflow;
