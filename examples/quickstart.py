"""Train on a small synthetic catalogue, insert the held-out items, and query them.

Run: .venv/bin/python examples/quickstart.py
"""

from xrmeta.data import make_synthetic, make_zero_shot_split
from xrmeta.model import XRMetaModel

data = make_synthetic(n_items=2000, n_queries=6000, seed=0)
split = make_zero_shot_split(data, novel_frac=0.1, seed=0)

model = XRMetaModel.train(
    [data.query_texts[i] for i in split.train_queries],
    split.Y_train,
    [data.item_texts[j] for j in split.observed],
    [data.item_ids[j] for j in split.observed],
)
novel = split.novel  # 200 items the model never saw, known by their titles only
model.add_items([data.item_texts[j] for j in novel], [data.item_ids[j] for j in novel])

for j in novel[:5]:
    ids, scores = model.predict([data.item_texts[j]], k=3, subset="inserted")
    print(f"{data.item_texts[j]!r:45s} -> {list(ids[0])}  (inserted id {data.item_ids[j]})")
