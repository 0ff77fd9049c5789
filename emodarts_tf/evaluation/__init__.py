"""Retraining a genotype, speaker-independent evaluation (UA, WA, F1) and reports.

- ``metrics``, ``summary``: UA / WA / macro F1 from one confusion matrix; mean +- std over folds.
- ``fitting``: ``fit_fold``, the per-fold training shared by emoDARTS retraining and the baselines.
- ``recipe``: the retraining recipe every model shares; ``ensemble``: its two trained networks served as one model.
- ``trainer``: ``train_genotype_fold``, the emoDARTS "augment" stage on top of ``fit_fold``.
- ``genotype_source``: which genotype trains which fold; refusal of genotypes that saw test speakers.
- ``model_dir``: the trained model directory that evaluation and export read.
- ``scoring``: a model directory scored on any corpus split; ``plots``: confusion matrix, learning curves.
- ``complexity``: parameters and FLOPs.
"""
