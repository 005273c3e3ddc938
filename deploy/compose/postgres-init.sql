-- docker-compose.yaml: the postgres image creates the database echotune owned by the user echotune.
-- The schemas ECHOTUNE_DATABASE_URL puts Dagster and MLflow in (they keep tables of the same names):
-- `echotune pipeline` creates them on first use, but the UIs may start before it ever ran.
CREATE SCHEMA IF NOT EXISTS dagster;
CREATE SCHEMA IF NOT EXISTS mlflow;
