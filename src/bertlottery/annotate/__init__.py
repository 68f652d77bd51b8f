"""bertlottery.annotate"""
