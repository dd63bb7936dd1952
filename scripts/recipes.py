"""The training recipes of the scripts that train checkpoints (``trajemb train`` flags; docs/workflow.md,
"Training recipes"), in one place so that ``train_shipped_checkpoints.py`` and ``reproduce_paper_table.py``
train the same models."""

from __future__ import annotations

#: The soft-neighbour recipe of the shipped checkpoints; the paper's is the triplet loss with calibrated mining.
SOFT_RECIPE = [
    "--loss",
    "soft_neighbors",
    "--no-normalize",
    "--batches",
    "neighborhoods",
    "--neighbors-per-seed",
    "4",
    "--hard-share",
    "0.3",
    "--augment-prob",
    "0.3",
    "--augment-noise",
    "1.0",
]
#: Issue 20: the soft recipe with every perturbation of the robustness curves on a PCA base, trained with
#: the rest (``pca_residual``) or kept at PCA (``pca_frozen``).
PCA_RESIDUAL_RECIPE = [
    *SOFT_RECIPE[:9],  # loss, batches, neighbourhoods, hard share
    "--augment-prob",
    "0.5",
    "--augment-noise",
    "1.0",
    "--augment-drop",
    "0.4",
    "--augment-short",
    "0.1",
    "--linear-base",
    "pca",
]
PCA_FROZEN_RECIPE = [*PCA_RESIDUAL_RECIPE, "--linear-base-training", "frozen"]
#: Issue 20, denoising distillation (docs/retrieval-quality.md, "Issue 20"): the same perturbations on a PCA
#: base kept at PCA, the perturbed windows' missing steps completed as PCA reads them, and the loss the
#: squared distance of each input's code to the PCA code of its clean window (``trajemb.training.distill_loss``)
#: plus a tenth of the soft-neighbour loss (``pca_distill``); ``pca_distill_tuned`` trains the base too.
PCA_DISTILL_RECIPE = [
    *PCA_RESIDUAL_RECIPE,
    "--augment-missing",
    "complete",
    "--distill-weight",
    "1.0",
    "--soft-weight",
    "0.1",
    "--linear-base-training",
    "frozen",
]
PCA_DISTILL_TUNED_RECIPE = [*PCA_DISTILL_RECIPE[:-1], "fine_tune"]
