"""checked"""
