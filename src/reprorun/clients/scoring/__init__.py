"""The scoring server and batch scorer of ``reprorun models serve|predict``, run inside a model's
own environment (``python -m reprorun.clients.scoring serve|predict ...``) or, with
``--env-manager local``, inside reprorun's process.

Standard library only: pandas, numpy, pyarrow and mlflow are used when the environment has
them. MLflow's scoring protocol (``mlflow/pyfunc/scoring_server``): ``POST /invocations`` takes
JSON with exactly one of ``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs``
(plus optional ``params``) or CSV, and answers ``{"predictions": ...}``; errors are
``{"error_code": "BAD_REQUEST", "message": ...}``; ``GET /ping``, ``/health``, ``/version``.
An MLflow ``python_function`` model in an environment that has mlflow is scored by MLflow's
own request parser and schema enforcement, so answers match ``mlflow models serve``.
"""

from reprorun.clients.scoring.batch import CHUNK_ROWS, file_format, predict_file, read_chunks
from reprorun.clients.scoring.model import Model, RCrate, read_mlmodel
from reprorun.clients.scoring.protocol import (
    READY,
    ModelLoadError,
    ScoringError,
    Table,
    jsonable,
    parse_json_request,
    read_csv_text,
)
from reprorun.clients.scoring.server import DEFAULT_MAX_BODY, make_server, serve

__all__ = [
    "CHUNK_ROWS",
    "DEFAULT_MAX_BODY",
    "READY",
    "Model",
    "ModelLoadError",
    "RCrate",
    "ScoringError",
    "Table",
    "file_format",
    "jsonable",
    "make_server",
    "parse_json_request",
    "predict_file",
    "read_chunks",
    "read_csv_text",
    "read_mlmodel",
    "serve",
]
