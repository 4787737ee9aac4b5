"""glasshouse.agent"""
