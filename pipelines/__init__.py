"""Dagster orchestration: assets that call the libraries (echotune, models, experiments) and record
what they did as metadata. No business logic lives here."""
