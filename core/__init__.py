"""The shared core under every layer above ``models``: the one settings object, the contracts every
module speaks (track and event schemas, the Redis key layout), the offline parquet store, the online
vector store, ingestion of outside data, the embedded Redis server and the synthetic data generator.

It imports ``models`` and nothing else of the project: ``experiments``, ``pipelines``, ``serving`` and
the application (``echotune``) build on it.
"""
