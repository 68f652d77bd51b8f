"""bertlottery: find, sample, re-train and analyse subnetworks of BERT-family encoders."""

__version__ = "0.1.0"
