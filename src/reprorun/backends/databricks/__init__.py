"""The databricks backend: run a project as a one-time Databricks job run (Jobs API
``runs/submit``) on a new cluster.

MLflow's databricks backend, through Databricks' documented REST API:

- The project's tree (without .git) is packed into a gzipped tar holding one folder,
  ``mlflow-project``, named by its SHA-256 and uploaded once to DBFS where MLflow keeps it:
  ``dbfs:/mlflow-experiments/<experiment id>/projects-code/<sha256>.tar.gz``.
- A one-time run on a new cluster of the configured spec runs reprorun's launcher (a
  ``spark_python_task``; MLflow submits a ``shell_command_task``, which Databricks does not
  document). The launcher unpacks the tree and reprorun's in-run client (so ``import reprorun``
  works on the cluster), then runs the command with bash in its subdirectory, with the run's
  variables.
- The lock's packages are the task's PyPI libraries: Databricks installs them on every node of
  the cluster (the driver and the workers that run Spark code) before the task starts.
- ``runs/get`` gives the state and the run's page, ``runs/get-output`` the task's output (its
  last 5 MB), ``runs/cancel`` stops it.

Credentials come from where the Databricks CLI and SDKs read them (DATABRICKS_HOST and
DATABRICKS_TOKEN, else a profile of ~/.databrickscfg); they are never kept with the run.

The package, one module per concern: options (the backend config and its checks), credentials
(where the workspace and token come from), api (the Databricks REST calls), payload (what is
shipped and the body of ``runs/submit``; launcher.py is the script run on the cluster), job
(following a Databricks run) and backend (the entry point ``create`` and the backend).
"""
