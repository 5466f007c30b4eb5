"""MLflow's search for runs, experiments and logged models: parse a filter, parse order-by
clauses, compile both to SQL, match dataset inputs and encode page tokens.

The package, one module per concern: grammar (the filter and order-by language: tokenizer,
parser, the checks each entity's clauses get, and ``format_filter``, its inverse), sql (the
parsed clauses as WHERE conditions and ORDER BY terms with named placeholders), plans (the
index-driven reading of the common run searches, with keyset page tokens), datasets (a run's
dataset inputs, which ``datasets.*`` clauses test in Python) and pages (offset page tokens).
The names the stores and the rest of reprorun use are here.
"""

from reprorun.tracking.search.datasets import (
    DATASET_CONTEXT_TAG,
    INPUTS_TAG,
    DatasetRef,
    dataset_refs,
    runs_matching_datasets,
)
from reprorun.tracking.search.grammar import (
    ATTRIBUTE,
    DATASET,
    DATASET_KEYS,
    EXPERIMENT_NUMERIC_ATTRIBUTES,
    METRIC,
    MODEL_ATTRIBUTES,
    NULL_OPS,
    NUMERIC_OPS,
    PARAM,
    RUN_NUMERIC_ATTRIBUTES,
    SET_OPS,
    STRING_OPS,
    TAG,
    Clause,
    OrderBy,
    format_filter,
    parse_experiment_filter,
    parse_filter,
    parse_model_filter,
    parse_order_by,
)
from reprorun.tracking.search.pages import decode_page_token, encode_page_token
from reprorun.tracking.search.sql import (
    EXPERIMENT_ORDER_ATTRIBUTES,
    RUN_ORDER_ATTRIBUTES,
    RUN_SEARCH_ATTRIBUTES,
    SqlBuilder,
    compile_experiments_filter,
    compile_runs_filter,
    compile_runs_order,
)

__all__ = [
    "ATTRIBUTE",
    "DATASET",
    "DATASET_CONTEXT_TAG",
    "DATASET_KEYS",
    "EXPERIMENT_NUMERIC_ATTRIBUTES",
    "EXPERIMENT_ORDER_ATTRIBUTES",
    "INPUTS_TAG",
    "METRIC",
    "MODEL_ATTRIBUTES",
    "NULL_OPS",
    "NUMERIC_OPS",
    "PARAM",
    "RUN_NUMERIC_ATTRIBUTES",
    "RUN_ORDER_ATTRIBUTES",
    "RUN_SEARCH_ATTRIBUTES",
    "SET_OPS",
    "STRING_OPS",
    "TAG",
    "Clause",
    "DatasetRef",
    "OrderBy",
    "SqlBuilder",
    "compile_experiments_filter",
    "compile_runs_filter",
    "compile_runs_order",
    "dataset_refs",
    "decode_page_token",
    "encode_page_token",
    "format_filter",
    "parse_experiment_filter",
    "parse_filter",
    "parse_model_filter",
    "parse_order_by",
    "runs_matching_datasets",
]
