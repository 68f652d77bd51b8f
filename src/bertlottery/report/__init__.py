"""bertlottery.report"""
