"""glasshouse.training"""
