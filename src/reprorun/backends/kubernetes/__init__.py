"""The kubernetes backend: run the command as a Kubernetes Job, the way MLflow's kubernetes
backend does.


The backend config has MLflow's keys: ``repository-uri``, ``kube-job-template-path`` and the
optional ``kube-context``. At submission the project's docker_env image, with the project
copied in (and reprorun's in-run client), is built with ``docker build`` and pushed to
``repository-uri``; a Job made from the user's template runs it: reprorun fills in the Job's
name, the first container's name, image (pinned by digest), command, working folder and the
run's environment variables, and keeps everything else. The Job's status gives the run's, its
pods' logs become the run's log, and cancelling deletes the Job (its pods go with it).

The ``kubernetes`` client is an optional dependency, imported only by this package.

The package, one module per concern: options (the backend config and the Job template's
checks), manifest (names and the Job to create), api (the cluster's API through the client),
job (following a Job) and backend (the entry point ``create`` and the backend). The image is
built by reprorun.envs.image.
"""
