"""glasshouse.observe"""
