"""polyzoo shared"""
