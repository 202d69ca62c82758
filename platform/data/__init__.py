"""Data: datasets (offline MNIST and digits, CIFAR, image folders) and how they are
partitioned among clients (IID, Dirichlet, shards).
"""
