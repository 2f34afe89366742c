"""bev_pool"""
