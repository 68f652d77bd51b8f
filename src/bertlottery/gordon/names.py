"""The names a Gordon config chooses from, and how results are labelled. Imports nothing heavy, so
that config validation and the CLI stay fast.

Result rows of a Gordon study (`bertlottery.results.ResultRow`), one per (task, variant, sparsity):

================  ====================================================================================
column            value
================  ====================================================================================
task              the GLUE task
seed              the study seed (pre-training and fine-tuning)
method            ``gmp-pretrain`` / ``random-pretrain`` / ``oneshot-pretrain``: pruned during
                  pre-training by that method, fine-tuned with the mask held fixed (G§3.2);
                  ``information-deletion``: the GMP checkpoint, pruned weights zeroed but free to train
                  (G§3.3); ``information-deletion-matched``: the same, fine-tuned for the pruned models'
                  epochs (a control for training length, which G§3.3 gives information deletion more of);
                  ``gmp-downstream``: fine-tuned unpruned, pruned by magnitude, trained on (G§3.4);
                  ``epochs-before-pruning``: the same at one sparsity after a varied number of epochs
                  (G Fig. 3 right)
subnetwork        ``sparsity-0.3`` (the target sparsity)
mode              ``pruned`` (mask fixed while fine-tuning) or ``finetuned`` (information deletion)
split, metric     ``dev`` (and ``dev_mismatched``): the task's metrics at the best learning rate;
                  ``dev`` / ``learning_rate``: that learning rate;
                  ``train`` / ``train_loss``: mean loss over the whole training set after fine-tuning
                  (G Table 1); ``pretrain-dev`` / ``pretrain_dev_loss``: the checkpoint's MLM loss on the
                  pre-training dev text (absent for ``gmp-downstream``, as in the paper);
                  ``mask`` / ``mask_difference``: ``gmp-downstream`` only, the fraction of mask entries
                  that differ from the mask GMP found during pre-training (G Fig. 3)
fraction_kept     1 - the sparsity reached over the pruned tensors (information deletion: the fraction
                  of weights not deleted before fine-tuning)
epochs            fine-tuning epochs in all (``gmp-downstream``: before and after pruning)
================  ====================================================================================
"""

from __future__ import annotations

__all__ = ["PRETRAIN_METHODS", "SCOPES", "TENSOR_CHOICES", "VARIANTS", "STUDY_VARIANTS", "MATCHED_DELETION",
           "BEFORE_PRUNING", "row_method", "subnetwork_name", "SPLIT_TRAIN", "SPLIT_PRETRAIN", "SPLIT_MASK"]

PRETRAIN_METHODS = ("gmp", "oneshot", "random")
SCOPES = ("local", "global")
TENSOR_CHOICES = ("gordon", "weights")
VARIANTS = ("pruned", "information-deletion", "after-downstream")  # what one downstream run can be
# information deletion at the pruned models' budget: the paper's 13-15 epochs against their 3 confound
# deletion with training length (at 0% the two share every weight and differ only in epochs)
MATCHED_DELETION = "information-deletion-matched"
STUDY_VARIANTS = ("pruned", "information-deletion", MATCHED_DELETION, "after-downstream")  # a config's choices
BEFORE_PRUNING = "epochs-before-pruning"  # the row method of G Fig. 3 (right)'s runs

SPLIT_TRAIN = "train"
SPLIT_PRETRAIN = "pretrain-dev"
SPLIT_MASK = "mask"


def row_method(variant: str, pretrain_method: str = "gmp") -> str:
    """The results table's ``method`` of a downstream variant."""
    if variant == "pruned":
        return f"{pretrain_method}-pretrain"
    if variant == "after-downstream":
        return "gmp-downstream"
    return variant


def subnetwork_name(sparsity: float) -> str:
    return f"sparsity-{sparsity:g}"
