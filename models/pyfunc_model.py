"""MLflow "model from code": the pyfunc that wraps a saved EchoTune model folder.

Loaded by ``mlflow.pyfunc.load_model("models:/<name>@champion")``. Input: a frame with a ``user_id``
column. Output: one row per recommendation (user_id, item_id, rank, score); ``params={"k": N}`` sets
the list length. Unknown users get nothing (the API serves them cold-start lists instead).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class EchoTuneRecommender(PythonModel):
    def load_context(self, context) -> None:
        from models.algorithms import load

        self.model = load(context.artifacts["model_dir"])
        self.user_index = {u: i for i, u in enumerate(self.model.user_ids)}

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        k = int((params or {}).get("k", 10))
        ids = [str(u) for u in model_input["user_id"]]
        known = [u for u in ids if u in self.user_index]
        if not known:
            return pd.DataFrame({"user_id": [], "item_id": [], "rank": [], "score": []})
        rows = np.array([self.user_index[u] for u in known])
        train = self.model.train_matrix
        exclude = train[rows] if train is not None else None
        idx, scores = self.model.recommend(rows, k=k, exclude=exclude)
        out = []
        for user, items, values in zip(known, idx, scores):
            for rank, (item, score) in enumerate(zip(items, values), start=1):
                if item >= 0:
                    out.append((user, self.model.item_ids[item], rank, float(score)))
        return pd.DataFrame(out, columns=["user_id", "item_id", "rank", "score"])


set_model(EchoTuneRecommender())
