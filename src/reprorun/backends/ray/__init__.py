"""Run a project as a job of a Ray cluster, through the Jobs REST API of its dashboard.

The client is reprorun's own (tracking/http.py) speaking Ray's documented REST API
(``/api/jobs/``, ``/api/packages/``), not the ``ray`` package: that package is ~100 MB, and its
version must match the cluster's, while the REST API is the stable interface Ray's own SDK uses.

A submission ships the project's tree as the job's ``working_dir`` (a zip uploaded to the
cluster, as Ray's SDK does), asks Ray to build the run's environment on the worker from the
lock (``runtime_env.pip``), and names the job ``reprorun-<run id>``, so anyone can find it.
reprorun's in-run client (standard library only) goes with every job as a ``py_modules``
package, first on the job's PYTHONPATH: ``import reprorun`` works whatever Python the
cluster's nodes have.

Modules: ``options`` (the backend's configuration), ``api`` (the Jobs REST API and the
zip of a tree), ``job`` (a job's state and exit reason), ``backend`` (submission).
"""
