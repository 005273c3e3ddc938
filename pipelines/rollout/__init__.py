"""The guarded rollout in Dagster: the ``model_rollout`` asset (a look at the running rollout, the
decision carried out, its state as metadata) and the ``watch_rollout`` sensor that asks for one after
every drain."""
