"""The bilevel DARTS search: the search model and its alternating train_step, the search run."""
