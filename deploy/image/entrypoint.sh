#!/bin/sh
# The image's roles, chosen by the command (docker run IMAGE <command>, or a pod's args):
#
#   serve | worker | pipeline | <any echotune command> ...   echotune <command> ...
#   code-server [ARGS]      the Dagster code server: gRPC on 0.0.0.0:4000 (extra ARGS, e.g. -p 4001, win)
#   mlflow-ui [ARGS]        the MLflow UI on 0.0.0.0:5000 over the tracking store the settings name
#                           (ECHOTUNE_DATABASE_URL, or ECHOTUNE_MLFLOW_TRACKING_URI), so no deployment
#                           spells that URL a second time
#   dagster ... | dagster-webserver ... | sh ...    run as given: Dagster's Helm chart and run launchers
#                                                   pass whole commands (dagster api grpc / execute_run)
#
# exec throughout, so the role is PID 1 and gets SIGTERM directly (both echotune serve and worker shut
# down gracefully on it); the health check reads PID 1's command line to know the role.
set -eu

[ "$#" -gt 0 ] || set -- serve
case "$1" in
    code-server)
        shift
        exec dagster api grpc --module-name pipelines.definitions --host 0.0.0.0 --port 4000 "$@" ;;
    mlflow-ui)
        shift
        # artifacts are read and written by the clients themselves, where the runs recorded them. The store
        # URI holds the database's password: MLflow reads it from MLFLOW_BACKEND_STORE_URI (the option's
        # environment variable), so it is on no command line (`ps` shows those to every user of the host)
        MLFLOW_BACKEND_STORE_URI=$(python -c 'from core.settings import get_settings; print(get_settings().mlflow_tracking_uri)')
        export MLFLOW_BACKEND_STORE_URI
        exec mlflow server --host 0.0.0.0 --port 5000 --no-serve-artifacts "$@" ;;
esac
if command -v "$1" >/dev/null 2>&1; then
    exec "$@"
fi
exec echotune "$@"
