"""The commands, one module each, siblings that never import each other (shared helpers: `common`):

- `xrmeta-train` (`train`): train a model on a dataset's zero-shot split and save it;
- `xrmeta-train-generator` (`train_generator`): train the learned cold-start generator of a saved model;
- `xrmeta-add-items` (`add_items`): insert new items (id and title) into a saved model;
- `xrmeta-predict` (`predict`): top-k items for query texts;
- `xrmeta-evaluate` (`evaluate`): a model's quality on its split (the evaluation itself: `xrmeta.evaluation`).
- `xrmeta-retrain` (`retrain`): retrain a saved model on its clicks plus new ones; a serving process reloads it;
- `xrmeta-add-feedback` (`add_feedback`): take clicks (query, item id) on a saved model's items, no retraining.

`python -m xrmeta.train` and the like run the same commands.
"""
