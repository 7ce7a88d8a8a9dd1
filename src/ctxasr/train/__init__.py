"""``ctxasr train``: the training commands of ctxasr's trainable models."""
