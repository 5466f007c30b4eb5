"""Train a decision tree on iris; log its parameters, accuracy, the tree and the model.

Runs under `reprorun run examples/iris -P max_depth=3` and by hand:
`python train.py --max_depth 4 --ccp_alpha 0.01` (then it records a run of its own).
"""

from sklearn.datasets import load_iris
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeClassifier, export_text

import reprorun

with reprorun.start_run():
    max_depth = reprorun.param("max_depth", 3)
    ccp_alpha = reprorun.param("ccp_alpha", 0.05)

    data = load_iris()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.3, random_state=42, stratify=data.target
    )
    model = DecisionTreeClassifier(max_depth=max_depth, ccp_alpha=ccp_alpha, random_state=42)
    model.fit(x_train, y_train)
    accuracy = accuracy_score(y_test, model.predict(x_test))

    reprorun.log_metric("accuracy", accuracy)
    reprorun.log_metric("n_leaves", model.get_n_leaves())
    reprorun.log_text(export_text(model, feature_names=list(data.feature_names)), "tree.txt")
    reprorun.log_model(model, "model")
    print(f"max_depth={max_depth} ccp_alpha={ccp_alpha} accuracy={accuracy:.4f}")
