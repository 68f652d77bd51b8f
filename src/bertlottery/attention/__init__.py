"""bertlottery.attention"""
