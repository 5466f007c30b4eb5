"""The per-run MLflow endpoint (``sidecar.py``): while a run executes on this machine, its
command logs through MLflow's REST API served on loopback, within what the run may do
(``scope.py``); ``request_rules.py`` holds the request checks it shares with the server."""
