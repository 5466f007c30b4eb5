"""The datasets an experiment's runs logged as inputs."""

from __future__ import annotations

from reprorun.tracking.mlflow_api.context import ApiContext
from reprorun.tracking.mlflow_api.errors import ApiError, Json, invalid
from reprorun.tracking.mlflow_api.parsing import _string_list
from reprorun.tracking.mlflow_api.routing import route
from reprorun.tracking.search import INPUTS_TAG
from reprorun.tracking.search.datasets import dataset_refs

MAX_DATASET_EXPERIMENTS = 20  # MLflow's limit of experiment ids in one search-datasets
MAX_DATASET_SUMMARIES = 1000  # and of the summaries it answers


@route("POST", "/experiments/search-datasets")
def search_datasets(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """The datasets the experiments' runs logged as inputs: name, digest and context."""
    experiment_ids = _string_list(body, "experiment_ids")
    if not experiment_ids:
        raise invalid("SearchDatasets request must specify at least one experiment_id.")
    if len(experiment_ids) > MAX_DATASET_EXPERIMENTS:
        raise invalid(
            f"SearchDatasets request cannot specify more than {MAX_DATASET_EXPERIMENTS} "
            f"experiment_ids. Received {len(experiment_ids)} experiment_ids."
        )
    read = getattr(api.store, "run_tag_values", None)
    if read is None:
        raise ApiError(501, "NOT_IMPLEMENTED", "This store cannot search datasets.")
    summaries: dict[tuple[str, str, str, str], Json] = {}
    for experiment_id, value in read(experiment_ids, INPUTS_TAG):
        for ref in dataset_refs(value):
            summary: Json = {
                "experiment_id": experiment_id,
                "name": ref.name or "",
                "digest": ref.digest or "",
            }
            if ref.context:
                summary["context"] = ref.context
            key = (experiment_id, summary["name"], summary["digest"], ref.context or "")
            summaries.setdefault(key, summary)
            if len(summaries) >= MAX_DATASET_SUMMARIES:
                return {"dataset_summaries": list(summaries.values())}
    return {"dataset_summaries": list(summaries.values())}
