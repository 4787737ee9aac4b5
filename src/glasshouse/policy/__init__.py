"""glasshouse.policy"""
