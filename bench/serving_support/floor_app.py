"""The floor the recommendation API is measured against: a bare FastAPI app that does the
unavoidable work of a recommendation (a 50,000 x 64 float32 matrix-vector product, a top-20 partial
sort, JSON for 20 tracks) and nothing else: no Redis, no auth, no filters, no metrics, no logs.

    OPENBLAS_NUM_THREADS=1 uvicorn bench.serving_support.floor_app:app --workers 2
"""

import numpy as np
from fastapi import FastAPI

N_TRACKS, N_USERS, DIM, COUNT = 50_000, 10_000, 64, 20
rng = np.random.default_rng(0)
items = rng.standard_normal((N_TRACKS, DIM), dtype=np.float32)
users = rng.standard_normal((N_USERS, DIM), dtype=np.float32)
ids = [f"{i:022d}" for i in range(N_TRACKS)]
names = [f"Track {i}" for i in range(N_TRACKS)]
app = FastAPI()


@app.get("/recommendations/{user}")
async def recommend(user: str, count: int = COUNT) -> dict:
    vector = users[hash(user) % N_USERS]
    scores = items @ vector
    top = np.argpartition(-scores, count - 1)[:count]
    top = top[np.argsort(-scores[top])]
    return {
        "user_id": user,
        "tracks": [
            {"track_id": ids[i], "name": names[i], "score": float(scores[i]), "position": p} for p, i in enumerate(top)
        ],
    }
