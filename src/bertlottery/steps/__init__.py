"""What a user can run alone, one module per command, each reading what the previous one wrote:

=================  =========================================================  ============================
module             does                                                       command
=================  =========================================================  ============================
`finetune`         fine-tune an encoder on a task, optionally under a mask    ``bertlottery finetune``
`evaluate`         metrics of a run on its dev sets, optionally under a mask  ``bertlottery evaluate``
`prune`            the good mask of a fine-tuned run (structured, magnitude)  ``bertlottery prune``
`subnetworks`      good / random / bad masks of one size; super-survivors     ``bertlottery subnetworks``
`retrain`          re-fine-tune under a mask from the pre-trained weights     ``bertlottery retrain``
`baselines`        majority class; random-init encoder                        ``bertlottery baseline``
`export`           an s-pruned model with the pruned parts removed            ``bertlottery export``
`quickstart`       MiniLM one epoch, full and with half its heads             ``bertlottery quickstart``
=================  =========================================================  ============================

The lottery study (`bertlottery.studies.lottery`) calls the same functions. Steps import the core
(data, models, masks, training, ...) and `bertlottery.runs`, never the pipeline, a study or the CLI.
"""
