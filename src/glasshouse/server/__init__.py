"""glasshouse.server"""
