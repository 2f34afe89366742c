"""sparse_conv"""
