"""Provisioning outside Modal's code path: the output bucket and the weights volume's contents."""
