"""glasshouse.guest"""
