"""experiment-framework: experiment definitions, sticky assignment, metrics from events, statistics
and the reports reviewers read. A plain library: serving and pipelines call it."""
