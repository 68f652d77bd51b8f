"""bertlottery.gordon"""
