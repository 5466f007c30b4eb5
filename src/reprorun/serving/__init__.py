"""Serving and batch scoring of logged models (``reprorun models serve|predict``).

``resolve`` turns a model URI into a local folder, ``environment`` builds the model's own
environment from its recorded requirements through the environment cache, and ``scorer``
starts the scoring process (``reprorun.clients.scoring``) in it, or scores in this process
with the ``local`` manager.
"""

from reprorun.serving.resolve import model_folder
from reprorun.serving.scorer import Scorer, predict_file, start_scorer

__all__ = ["Scorer", "model_folder", "predict_file", "start_scorer"]
